"""A local GitHub API for the checks tests (and the reconcile tests after them).

Every request is validated against GitHub's published OpenAPI description with
openapi-core; a request that does not fit is answered 422 and recorded in
``violations``, so a malformed call fails the test that made it. The rules the
description leaves to prose are enforced too: a check run created or updated as
``completed`` needs a ``conclusion``; a completed run stays completed; at most 50
annotations per request. The App JWT is verified with the App's public key, and
installation tokens expire.

Faults can be scripted per endpoint (``create``, ``update``, ``lookup``, ``token``): an
HTTP status with headers (a 403 secondary rate limit with ``retry-after``, a 5xx, a 404
right after a create), or a create that GitHub commits but answers too late (a timeout).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import orjson
from aiohttp import web
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters

from tests.fake_github.openapi import description

PATHS = {
    "/app/installations/{installation_id}/access_tokens": {"post"},
    "/repos/{owner}/{repo}/check-runs": {"post"},
    "/repos/{owner}/{repo}/check-runs/{check_run_id}": {"patch", "get"},
    "/repos/{owner}/{repo}/commits/{ref}/check-runs": {"get"},
}


@dataclass
class Fault:
    endpoint: str
    status: int = 0  # 0: commit the create, then answer only after ``hold_s``
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    hold_s: float = 0.0


@dataclass(frozen=True)
class Seen:
    endpoint: str
    method: str
    path: str
    body: Any
    status: int


class _OpenAPIRequest:
    """An aiohttp request as openapi-core reads one, as if sent to api.github.com."""

    def __init__(self, request: web.Request, body: bytes) -> None:
        self.host_url = "https://api.github.com"
        self.path = request.path
        self.method = request.method.lower()
        self.body = body or None
        self.content_type = request.content_type if body else "application/json"
        self.parameters = RequestParameters(
            query=request.query, header=request.headers, cookie=request.cookies
        )


class FakeGitHub:
    def __init__(
        self, cache_dir: Path, app_id: int, public_key: str, token_lifetime_s: float = 3600.0
    ) -> None:
        self.openapi = OpenAPI.from_dict(description(cache_dir, PATHS))
        self.app_id = app_id
        self.public_key = public_key
        self.token_lifetime_s = token_lifetime_s
        self.violations: list[str] = []
        self.seen: list[Seen] = []
        self.check_runs: dict[int, dict[str, Any]] = {}
        self.tokens: dict[str, tuple[int, float]] = {}
        self.faults: list[Fault] = []
        self.revoked: set[int] = set()
        self.after_create: Callable[[], None] | None = None  # e.g. kill the worker
        self._ids = itertools.count(4_000_001)
        self._remaining = 5000

    # --- what tests look at -------------------------------------------------------------
    def calls(self, endpoint: str | None = None) -> list[Seen]:
        return [s for s in self.seen if endpoint is None or s.endpoint == endpoint]

    def runs_for(self, external_id: str) -> list[dict[str, Any]]:
        return [r for r in self.check_runs.values() if r["external_id"] == external_id]

    def fail(
        self, endpoint: str, status: int = 0, times: int = 1, hold_s: float = 0.0, **headers: str
    ) -> None:
        """Script a fault; ``retry_after="1"`` becomes the header ``retry-after: 1``."""
        named = {name.replace("_", "-"): value for name, value in headers.items()}
        self.faults.append(Fault(endpoint, status, named, times, hold_s))

    # --- the application ------------------------------------------------------------------
    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._validate])
        app.router.add_routes([
            web.post("/app/installations/{installation_id}/access_tokens", self._token),
            web.post("/repos/{owner}/{repo}/check-runs", self._create),
            web.get("/repos/{owner}/{repo}/commits/{ref}/check-runs", self._lookup),
            web.patch("/repos/{owner}/{repo}/check-runs/{check_run_id}", self._update),
        ])  # fmt: skip
        return app

    @web.middleware
    async def _validate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        try:
            self.openapi.validate_request(_OpenAPIRequest(request, body))
        except Exception as exc:  # openapi-core's own error types, whatever they are
            return self._violation(f"{request.method} {request.path}: {exc}")
        response: web.StreamResponse = await handler(request)
        self._remaining -= 1
        response.headers["x-ratelimit-limit"] = "5000"
        response.headers["x-ratelimit-remaining"] = str(self._remaining)
        response.headers["x-ratelimit-reset"] = str(int(time.time()) + 3600)
        return response

    def _violation(self, message: str) -> web.Response:
        self.violations.append(message)
        return _json(422, {"message": f"Validation Failed: {message}"})

    def _fault(self, endpoint: str) -> Fault | None:
        for fault in self.faults:
            if fault.endpoint == endpoint and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    async def _answer(
        self, request: web.Request, endpoint: str, status: int, payload: Any
    ) -> web.Response:
        body = orjson.loads(await request.read() or b"null")
        self.seen.append(Seen(endpoint, request.method, request.path, body, status))
        return _json(status, payload)

    async def _failed(self, request: web.Request, endpoint: str, fault: Fault) -> web.Response:
        answer = await self._answer(request, endpoint, fault.status, {"message": "fault"})
        answer.headers.update(fault.headers)
        return answer

    # --- auth -----------------------------------------------------------------------------
    async def _token(self, request: web.Request) -> web.Response:
        installation = int(request.match_info["installation_id"])
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            claims = jwt.decode(
                token, self.public_key, algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"]}, leeway=0,
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            return await self._answer(request, "token", 401, {"message": f"bad JWT: {exc}"})
        now = time.time()
        if scheme.lower() != "bearer" or claims["iss"] != str(self.app_id):
            return self._violation(f"JWT issued by {claims['iss']!r}, not the App")
        if claims["iat"] > now - 30:  # GitHub's advice: back-date iat 60 s for clock drift
            return self._violation("JWT iat not back-dated for clock drift")
        if claims["exp"] - now > 600:
            return self._violation("JWT expires more than 10 minutes from now")
        if installation in self.revoked:
            return await self._answer(request, "token", 401, {"message": "Bad credentials"})
        if (fault := self._fault("token")) is not None:
            return await self._failed(request, "token", fault)
        value = f"ghs_{secrets.token_hex(16)}"
        expires = now + self.token_lifetime_s
        self.tokens[value] = (installation, expires)
        at = datetime.fromtimestamp(expires, UTC).isoformat().replace("+00:00", "Z")
        return await self._answer(request, "token", 201, {"token": value, "expires_at": at})

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        held = self.tokens.get(token)
        return scheme.lower() == "token" and held is not None and held[1] > time.time()

    # --- check runs -----------------------------------------------------------------------
    def _run(self, run_id: int, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
        owner, repo = request.match_info["owner"], request.match_info["repo"]
        return {
            "id": run_id, "head_sha": body["head_sha"], "node_id": f"CR_{run_id}",
            "external_id": body.get("external_id"), "name": body["name"],
            "url": f"https://api.github.com/repos/{owner}/{repo}/check-runs/{run_id}",
            "html_url": f"https://github.com/{owner}/{repo}/runs/{run_id}",
            "details_url": body.get("details_url"), "status": body.get("status", "queued"),
            "conclusion": body.get("conclusion"), "started_at": body.get("started_at"),
            "completed_at": body.get("completed_at"), "repository": f"{owner}/{repo}",
            "output": {"title": None, "summary": None, "text": None, "annotations_count": 0,
                       "annotations_url": ""},
            "annotations": [], "app": {"id": self.app_id, "slug": "hookstream"},
            "pull_requests": [],
        }  # fmt: skip

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return await self._answer(request, "create", 401, {"message": "Bad credentials"})
        body = orjson.loads(await request.read())
        if (problem := _prose(body, None)) is not None:
            return self._violation(problem)
        fault = self._fault("create")
        if fault is not None and fault.status:
            return await self._failed(request, "create", fault)
        run = self._run(next(self._ids), request, body)
        _apply_output(run, body)
        self.check_runs[run["id"]] = run
        if fault is not None:  # committed, answered too late
            self.seen.append(Seen("create", "POST", request.path, body, 0))
            await asyncio.sleep(fault.hold_s)
            return _json(201, _public(run))
        response = await self._answer(request, "create", 201, _public(run))
        if self.after_create is not None:
            await response.prepare(request)
            await response.write_eof()
            self.after_create()
        return response

    async def _lookup(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return await self._answer(request, "lookup", 401, {"message": "Bad credentials"})
        if (fault := self._fault("lookup")) is not None:
            return await self._failed(request, "lookup", fault)
        repository = f"{request.match_info['owner']}/{request.match_info['repo']}"
        name = request.query.get("check_name")
        runs = [_public(r) for r in self.check_runs.values()
                if r["repository"] == repository and r["head_sha"] == request.match_info["ref"]
                and (name is None or r["name"] == name)]  # fmt: skip
        runs.sort(key=lambda r: -int(r["id"]))
        return await self._answer(request, "lookup", 200,
                                  {"total_count": len(runs), "check_runs": runs})  # fmt: skip

    async def _update(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return await self._answer(request, "update", 401, {"message": "Bad credentials"})
        if (fault := self._fault("update")) is not None:
            return await self._failed(request, "update", fault)
        run = self.check_runs.get(int(request.match_info["check_run_id"]))
        if run is None:
            return await self._answer(request, "update", 404, {"message": "Not Found"})
        body = orjson.loads(await request.read())
        if (problem := _prose(body, run)) is not None:
            return self._violation(problem)
        for key in ("status", "conclusion", "started_at", "completed_at", "details_url"):
            if key in body:
                run[key] = body[key]
        if body.get("conclusion"):
            run["status"] = "completed"
        _apply_output(run, body)
        return await self._answer(request, "update", 200, _public(run))


def _prose(body: dict[str, Any], run: dict[str, Any] | None) -> str | None:
    """The rules GitHub's description states in prose, not in its schema."""
    if (body.get("status") == "completed" or body.get("completed_at")) and not body.get(
        "conclusion"
    ):
        return "a completed check run needs a conclusion"
    if body.get("conclusion") == "stale":
        return "only GitHub may set the conclusion stale"
    if run is not None and run["status"] == "completed":
        if body.get("status") not in (None, "completed"):
            return f"a completed check run cannot go back to {body['status']}"
        if body.get("conclusion") not in (None, run["conclusion"]):
            return "a completed check run keeps its conclusion"
    annotations = (body.get("output") or {}).get("annotations") or []
    if len(annotations) > 50:
        return f"{len(annotations)} annotations in one request (GitHub takes 50)"
    output = body.get("output") or {}
    for key in ("summary", "text"):
        if len(str(output.get(key) or "").encode()) > 65535:
            return f"output.{key} over 65,535 bytes"
    return None


def _apply_output(run: dict[str, Any], body: dict[str, Any]) -> None:
    output = body.get("output")
    if output:
        run["output"].update({k: v for k, v in output.items() if k != "annotations"})
        run["annotations"] += output.get("annotations") or []
        run["output"]["annotations_count"] = len(run["annotations"])


def _public(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k not in ("annotations", "repository")}


def _json(status: int, payload: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload),
                        content_type="application/json")  # fmt: skip

"""A local GitHub API for the checks tests and the reconcile tests.

Every request is validated against GitHub's published OpenAPI description with
openapi-core; a request that does not fit is answered 422 and recorded in
``violations``, so a malformed call fails the test that made it. The rules the
description leaves to prose are enforced too: a check run created or updated as
``completed`` needs a ``conclusion``; a completed run stays completed; at most 50
annotations per request. The App JWT is verified with the App's public key, and
installation tokens expire.

The App's webhook deliveries are scripted with :meth:`FakeGitHub.add_delivery` (one row
per attempt, as GitHub lists them); ``GET /app/hook/deliveries`` pages them newest first
with a cursor and a ``Link`` header, and ``POST …/attempts`` records a redelivery (a new,
successful attempt row). The answers of these endpoints are validated too.

Faults can be scripted per endpoint (``create``, ``update``, ``lookup``, ``token``,
``deliveries``, ``redeliver``): an HTTP status with headers (a 403 secondary rate limit
with ``retry-after``, a primary one with ``reset_in_s``, a 5xx, a 404 right after a
create), or a create that GitHub commits but answers too late (a timeout).
"""

from __future__ import annotations

import asyncio
import itertools
import math
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
    "/app/hook/deliveries": {"get"},
    "/app/hook/deliveries/{delivery_id}": {"get"},
    "/app/hook/deliveries/{delivery_id}/attempts": {"post"},
}
# Paths whose 2xx answers are validated against the description too.
ANSWERS_CHECKED = {path for path in PATHS if path.startswith("/app/hook/")}


@dataclass
class Fault:
    endpoint: str
    status: int = 0  # 0: commit the create, then answer only after ``hold_s``
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    hold_s: float = 0.0
    reset_in_s: float | None = None  # a primary rate limit: remaining 0, reset this far ahead


@dataclass(frozen=True)
class Seen:
    endpoint: str
    method: str
    path: str
    body: Any
    status: int
    at: float = field(default_factory=time.time)


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


@dataclass(frozen=True)
class _OpenAPIResponse:
    """An aiohttp response as openapi-core reads one."""

    data: bytes
    status_code: int
    content_type: str
    headers: Any


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
        self.deliveries: list[dict[str, Any]] = []  # one row per attempt, as GitHub lists them
        self._delivery_ids = itertools.count(12_000_000_001)

    # --- what tests look at -------------------------------------------------------------
    def calls(self, endpoint: str | None = None) -> list[Seen]:
        return [s for s in self.seen if endpoint is None or s.endpoint == endpoint]

    def runs_for(self, external_id: str) -> list[dict[str, Any]]:
        return [r for r in self.check_runs.values() if r["external_id"] == external_id]

    def redeliveries(self) -> list[int]:
        """The attempt ids GitHub was asked to redeliver and accepted (202), in order."""
        return [int(s.path.split("/")[4]) for s in self.calls("redeliver") if s.status == 202]

    def fail(
        self,
        endpoint: str,
        status: int = 0,
        times: int = 1,
        hold_s: float = 0.0,
        reset_in_s: float | None = None,
        **headers: str,
    ) -> None:
        """Script a fault; ``retry_after="1"`` becomes the header ``retry-after: 1``."""
        named = {name.replace("_", "-"): value for name, value in headers.items()}
        self.faults.append(Fault(endpoint, status, named, times, hold_s, reset_in_s))

    def add_delivery(
        self,
        guid: str,
        status_code: int,
        delivered_at: datetime,
        *,
        event: str = "push",
        action: str | None = None,
        redelivery: bool = False,
        status: str | None = None,
        repository_id: int | None = 1,
    ) -> dict[str, Any]:
        """Script one attempt GitHub made; ``status_code`` 0: no HTTP answer."""
        if status is None:
            status = (
                "OK" if 200 <= status_code < 300
                else "failed to connect" if status_code == 0
                else f"Invalid HTTP Response: {status_code}"
            )  # fmt: skip
        row = {
            "id": next(self._delivery_ids), "guid": guid, "delivered_at": _iso(delivered_at),
            "redelivery": redelivery, "duration": 0.27, "status": status,
            "status_code": status_code, "event": event, "action": action,
            "installation_id": 42, "repository_id": repository_id, "throttled_at": None,
        }  # fmt: skip
        self.deliveries.append(row)
        return row

    # --- the application ------------------------------------------------------------------
    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._validate])
        app.router.add_routes([
            web.post("/app/installations/{installation_id}/access_tokens", self._token),
            web.post("/repos/{owner}/{repo}/check-runs", self._create),
            web.get("/repos/{owner}/{repo}/commits/{ref}/check-runs", self._lookup),
            web.patch("/repos/{owner}/{repo}/check-runs/{check_run_id}", self._update),
            web.get("/app/hook/deliveries", self._deliveries),
            web.get("/app/hook/deliveries/{delivery_id}", self._delivery),
            web.post("/app/hook/deliveries/{delivery_id}/attempts", self._redeliver),
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
        route = request.match_info.route.resource
        if (
            route is not None and route.canonical in ANSWERS_CHECKED
            and 200 <= response.status < 300 and isinstance(response, web.Response)
        ):  # fmt: skip
            answer = _OpenAPIResponse(
                bytes(response.body or b""),  # type: ignore[arg-type]
                response.status, response.content_type, response.headers,
            )  # fmt: skip
            try:
                self.openapi.validate_response(_OpenAPIRequest(request, body), answer)
            except Exception as exc:  # the fake's own answer does not fit: its bug
                self.violations.append(f"answer to {request.method} {request.path}: {exc}")
        self._remaining -= 1
        # A scripted fault may say its own rate-limit headers (a primary rate limit).
        response.headers.setdefault("x-ratelimit-limit", "5000")
        response.headers.setdefault("x-ratelimit-remaining", str(self._remaining))
        response.headers.setdefault("x-ratelimit-reset", str(int(time.time()) + 3600))
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
        if fault.reset_in_s is not None:
            answer.headers["x-ratelimit-remaining"] = "0"
            answer.headers["x-ratelimit-reset"] = str(math.ceil(time.time() + fault.reset_in_s))
        return answer

    # --- auth -----------------------------------------------------------------------------
    async def _refuse_jwt(self, request: web.Request, endpoint: str) -> web.Response | None:
        """The answer to a request without a good App JWT; None when the JWT is good."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            claims = jwt.decode(
                token, self.public_key, algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"]}, leeway=0,
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            return await self._answer(request, endpoint, 401, {"message": f"bad JWT: {exc}"})
        now = time.time()
        if scheme.lower() != "bearer" or claims["iss"] != str(self.app_id):
            return self._violation(f"JWT issued by {claims['iss']!r}, not the App")
        if claims["iat"] > now - 30:  # GitHub's advice: back-date iat 60 s for clock drift
            return self._violation("JWT iat not back-dated for clock drift")
        if claims["exp"] - now > 600:
            return self._violation("JWT expires more than 10 minutes from now")
        return None

    async def _token(self, request: web.Request) -> web.Response:
        installation = int(request.match_info["installation_id"])
        if (refused := await self._refuse_jwt(request, "token")) is not None:
            return refused
        now = time.time()
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
        if self.after_create is not None:
            # Say, the worker killed: GitHub holds the run, the worker never learns of it.
            # Before the answer goes out, so that the worker cannot store it first.
            self.after_create()
        return await self._answer(request, "create", 201, _public(run))

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

    # --- the App's webhook deliveries ------------------------------------------------------
    async def _deliveries(self, request: web.Request) -> web.Response:
        if (refused := await self._refuse_jwt(request, "deliveries")) is not None:
            return refused
        if (fault := self._fault("deliveries")) is not None:
            return await self._failed(request, "deliveries", fault)
        per_page = min(int(request.query.get("per_page", "30")), 100)
        rows = sorted(self.deliveries, key=lambda r: (r["delivered_at"], r["id"]), reverse=True)
        if wanted := request.query.get("status"):
            rows = [r for r in rows if (200 <= r["status_code"] < 300) == (wanted == "success")]
        cursors = [f"v1_{r['id']}" for r in rows]
        cursor = request.query.get("cursor")
        if cursor is not None and cursor not in cursors:
            return await self._answer(request, "deliveries", 400, {"message": "Bad cursor"})
        first = cursors.index(cursor) if cursor is not None else 0
        after = first + per_page
        response = await self._answer(request, "deliveries", 200, rows[first:after])
        if after < len(rows):
            query = {**request.query, "per_page": str(per_page), "cursor": cursors[after]}
            response.headers["Link"] = f'<{request.url.with_query(query)}>; rel="next"'
        return response

    def _delivery_row(self, request: web.Request) -> dict[str, Any] | None:
        wanted = int(request.match_info["delivery_id"])
        return next((r for r in self.deliveries if r["id"] == wanted), None)

    async def _delivery(self, request: web.Request) -> web.Response:
        if (refused := await self._refuse_jwt(request, "delivery")) is not None:
            return refused
        if (row := self._delivery_row(request)) is None:
            return await self._answer(request, "delivery", 404, {"message": "Not Found"})
        return await self._answer(request, "delivery", 200, {
            **row, "url": "https://hookstream.example/webhooks/github",
            "request": {"headers": {"X-GitHub-Delivery": row["guid"]}, "payload": {}},
            "response": {"headers": {}, "payload": None},
        })  # fmt: skip

    async def _redeliver(self, request: web.Request) -> web.Response:
        if (refused := await self._refuse_jwt(request, "redeliver")) is not None:
            return refused
        if (fault := self._fault("redeliver")) is not None:
            return await self._failed(request, "redeliver", fault)
        if (row := self._delivery_row(request)) is None:
            return await self._answer(request, "redeliver", 404, {"message": "Not Found"})
        # GitHub sends it again; here the new attempt simply succeeds.
        self.add_delivery(
            row["guid"], 202, datetime.now(UTC), event=row["event"], action=row["action"],
            redelivery=True, repository_id=row["repository_id"],
        )  # fmt: skip
        return await self._answer(request, "redeliver", 202, {})


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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

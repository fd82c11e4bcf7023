"""The GitHub effector: carries the machine's effects to the Checks API (gidgethub, aiohttp).

- **Auth**: a GitHub App JWT (``gidgethub.apps``: RS256, ``iss`` = the App id, ``iat``
  back-dated 60 s, ``exp`` 10 min) buys installation tokens, cached until 5 minutes
  before their ``expires_at``: one token request per installation per hour.
- **Never a second check run**: a create that may already have reached GitHub (the
  machine says so after a crash; a timeout says so here) is retried only after a lookup
  by ``external_id``.
- **Limits**: 403/429 wait ``retry-after``, else until ``x-ratelimit-reset``; 5xx and
  network errors are retried with backoff; a 404 right after a create is retried
  (GitHub is eventually consistent); writes to one installation are serialized.
- **Failures that retrying cannot fix** (401: a revoked installation; a 4xx refusal;
  retries exhausted) raise :class:`GitHubEffectFailed`, which the worker parks in
  ``hookstream.checks.dlq``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import gidgethub
from gidgethub import apps
from gidgethub.aiohttp import GitHubAPI
from prometheus_client import CollectorRegistry, Counter, Gauge

from processors.backoff import full_jitter
from processors.checks import calls
from processors.checks.calls import Call
from schemas.dispatch import DispatchRequest
from schemas.errors import HookstreamError
from schemas.run_status import RunStatusRecord
from schemas.settings import Settings

TOKEN_MARGIN_S = 5 * 60
RETRY_WAIT_CAP_S = 900.0


class CredentialsError(HookstreamError):
    """The App's credentials are configured but unusable."""


class GitHubEffectFailed(HookstreamError):
    """GitHub refused the effect, or kept failing; the worker parks it with this error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AppCredentials:
    app_id: str
    private_key: str

    @classmethod
    def from_settings(cls, settings: Settings) -> AppCredentials | None:
        """The configured credentials; None when neither setting is given."""
        app_id, key_file = settings.github_app_id, settings.github_private_key_file
        if app_id is None and key_file is None:
            return None
        if app_id is None:
            raise CredentialsError(
                "HOOKSTREAM_GITHUB_PRIVATE_KEY_FILE is set but HOOKSTREAM_GITHUB_APP_ID is not"
            )
        if key_file is None:
            raise CredentialsError(
                "HOOKSTREAM_GITHUB_APP_ID is set but HOOKSTREAM_GITHUB_PRIVATE_KEY_FILE is not"
            )
        try:
            key = Path(key_file).read_text()
        except OSError as exc:
            raise CredentialsError(
                f"HOOKSTREAM_GITHUB_PRIVATE_KEY_FILE={key_file}: cannot read it ({exc.strerror})"
            ) from None
        if "PRIVATE KEY-----" not in key:
            raise CredentialsError(
                f"HOOKSTREAM_GITHUB_PRIVATE_KEY_FILE={key_file}: not a PEM private key "
                "(download one from the App's settings page)"
            )
        try:
            apps.get_jwt(app_id=app_id, private_key=key)
        except Exception as exc:
            raise CredentialsError(
                f"HOOKSTREAM_GITHUB_PRIVATE_KEY_FILE={key_file}: unusable key ({exc})"
            ) from None
        return cls(app_id, key)


class ChecksMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "hookstream_checks_github_requests",
            "Checks API requests by endpoint and HTTP status (0: no answer).",
            ("endpoint", "status"), registry=registry,
        )  # fmt: skip
        self.rate_limit = Gauge(
            "hookstream_checks_rate_limit_remaining",
            "Requests left in the installation's rate-limit window, as GitHub last said.",
            ("installation",), registry=registry,
        )  # fmt: skip
        self.transitions = Counter(
            "hookstream_checks_transitions",
            "Check-run transitions applied, by the status reached.",
            ("to",), registry=registry,
        )  # fmt: skip
        self.refused = Counter(
            "hookstream_checks_transitions_refused",
            "Inputs that changed nothing: duplicate, regression, late, or ignored.",
            ("kind",), registry=registry,
        )  # fmt: skip
        self.unsent = Counter(
            "hookstream_checks_effects_unsent",
            "Effects recorded but not carried out: replay, or no App credentials.",
            ("reason",), registry=registry,
        )  # fmt: skip
        self.parked = Counter(
            "hookstream_checks_effects_parked",
            "Effects GitHub refused or kept failing, parked in hookstream.checks.dlq.",
            registry=registry,
        )


class InstallationTokens:
    """Installation tokens, cached until 5 minutes before GitHub says they expire."""

    def __init__(self, credentials: AppCredentials, clock: Callable[[], float] = time.time) -> None:
        self.credentials = credentials
        self.clock = clock
        self._tokens: dict[int, tuple[str, float]] = {}

    async def get(self, gh: GitHubAPI, installation_id: int) -> str:
        cached = self._tokens.get(installation_id)
        if cached is not None and self.clock() < cached[1] - TOKEN_MARGIN_S:
            return cached[0]
        answer = await apps.get_installation_access_token(
            gh,
            installation_id=str(installation_id),
            app_id=self.credentials.app_id,
            private_key=self.credentials.private_key,
        )
        expires = datetime.fromisoformat(answer["expires_at"].replace("Z", "+00:00"))
        self._tokens[installation_id] = (answer["token"], expires.timestamp())
        return str(answer["token"])

    def forget(self, installation_id: int) -> None:
        self._tokens.pop(installation_id, None)


class CheckRunEffector:
    """Creates and updates check runs; each method returns only once GitHub has it."""

    def __init__(
        self,
        gh: GitHubAPI,
        tokens: InstallationTokens,
        metrics: ChecksMetrics,
        *,
        max_attempts: int = 6,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.gh = gh
        self.tokens = tokens
        self.metrics = metrics
        self.max_attempts = max_attempts
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self._sleep, self._jitter = sleep, jitter
        self._locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def create(
        self, request: DispatchRequest, details_url: str | None, *, may_exist: bool
    ) -> int:
        """The check run's id: found by external_id if it may exist, else created."""
        assert request.installation_id is not None
        async with self._locks[request.installation_id]:
            for attempt in range(1, self.max_attempts + 1):
                if may_exist:
                    found = await self._lookup(request)
                    if found is not None:
                        return found
                try:
                    call = calls.create(request, details_url)
                    answer = await self._call(request.installation_id, call, once=True)
                    return int(answer["id"])
                except _NoAnswer as exc:
                    # The create may have reached GitHub: look before creating again.
                    may_exist = True
                    if attempt == self.max_attempts:
                        raise GitHubEffectFailed(f"create: {exc}") from None
                    await self._sleep(self._backoff(attempt))
        raise AssertionError("unreachable")

    async def update(
        self,
        request: DispatchRequest,
        check_run_id: int,
        report: RunStatusRecord,
        details_url: str | None,
        *,
        just_created: bool,
    ) -> None:
        assert request.installation_id is not None
        async with self._locks[request.installation_id]:
            for call in calls.updates(request, check_run_id, report, details_url):
                await self._call(request.installation_id, call, retry_not_found=just_created)

    async def _lookup(self, request: DispatchRequest) -> int | None:
        assert request.installation_id is not None
        answer = await self._call(request.installation_id, calls.lookup(request))
        for run in answer.get("check_runs", []):
            if run.get("external_id") == request.dispatch_id:
                return int(run["id"])
        return None

    async def _call(
        self,
        installation_id: int,
        call: Call,
        *,
        retry_not_found: bool = False,
        once: bool = False,
    ) -> dict[str, Any]:
        """Send ``call``, retrying what GitHub says to retry. ``once``: no answer raises."""
        refreshed = False
        for attempt in range(1, self.max_attempts + 1):
            token = await self._token(installation_id)
            try:
                answer = await self._send(call, token)
                self._note_rate_limit(installation_id)
                return answer
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.metrics.requests.labels(call.endpoint, "0").inc()
                if once:
                    raise _NoAnswer(f"{type(exc).__name__} {exc}".strip()) from None
                wait = self._backoff(attempt)
                error = f"no answer ({type(exc).__name__})"
            except gidgethub.GitHubBroken as exc:
                wait, error = self._backoff(attempt), f"HTTP {exc.status_code}"
            except gidgethub.BadRequest as exc:
                self._note_rate_limit(installation_id)
                status = int(exc.status_code)
                error = f"HTTP {status}: {exc}"
                if status == 401 and not refreshed:
                    self.tokens.forget(installation_id)  # revoked or expired early: once more
                    refreshed, wait = True, 0.0
                elif status in (403, 429) and (
                    limited := rate_limit_wait(exc.headers, time.time())
                ):
                    wait = limited
                elif status == 404 and retry_not_found:
                    wait = self._backoff(attempt)
                else:
                    raise GitHubEffectFailed(f"{call.endpoint}: {error}", status) from None
            if attempt == self.max_attempts:
                break
            await self._sleep(wait)
        raise GitHubEffectFailed(
            f"{call.endpoint}: gave up after {self.max_attempts} attempts: {error}"
        )

    async def _token(self, installation_id: int) -> str:
        try:
            return await self.tokens.get(self.gh, installation_id)
        except gidgethub.BadRequest as exc:
            self.metrics.requests.labels("token", str(exc.status_code)).inc()
            raise GitHubEffectFailed(
                f"installation {installation_id}: no token (HTTP {exc.status_code}: {exc})",
                int(exc.status_code),
            ) from None

    async def _send(self, call: Call, token: str) -> dict[str, Any]:
        status = "0"
        try:
            if call.method == "GET":
                answer = await self.gh.getitem(call.url, call.url_vars, oauth_token=token)
            else:
                send = self.gh.post if call.method == "POST" else self.gh.patch
                answer = await send(call.url, call.url_vars, data=call.body, oauth_token=token)
            status = "200"
        except gidgethub.HTTPException as exc:
            status = str(exc.status_code)
            raise
        finally:
            self.metrics.requests.labels(call.endpoint, status).inc()
        return answer if isinstance(answer, dict) else {}

    def _note_rate_limit(self, installation_id: int) -> None:
        if self.gh.rate_limit is not None:
            remaining = self.gh.rate_limit.remaining
            self.metrics.rate_limit.labels(str(installation_id)).set(remaining)

    def _backoff(self, attempt: int) -> float:
        return full_jitter(attempt, self.backoff_s, self.backoff_max_s, self._jitter())


class _NoAnswer(Exception):
    """A request whose answer never came: it may or may not have reached GitHub."""


def rate_limit_wait(headers: Any, now: float) -> float | None:
    """Seconds to wait after a 403/429: ``retry-after``, else until the window resets."""
    retry_after = headers.get("retry-after")
    if retry_after is not None and str(retry_after).strip().isdigit():
        return min(float(retry_after), RETRY_WAIT_CAP_S)
    if headers.get("x-ratelimit-remaining") == "0" and headers.get("x-ratelimit-reset"):
        reset = float(headers["x-ratelimit-reset"])
        return min(max(0.0, reset - now), RETRY_WAIT_CAP_S)
    return None

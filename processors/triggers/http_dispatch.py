"""Dispatch to HTTP targets: signed POSTs with retries, backoff, and a dead-letter end.

Each target has its own queue and workers, so a target that keeps failing only delays
its own dispatches. The decisions (what to retry, how long to wait) are plain functions;
:class:`HttpDispatcher` only moves requests through aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp

from processors.backoff import full_jitter
from processors.triggers.rules import TargetSpec
from schemas.dispatch import DispatchRequest
from schemas.errors import HookstreamError
from schemas.signature import sign

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hookstream-Signature-256"
RETRY_AFTER_CAP_S = 300.0


def retryable(status: int | None) -> bool:
    """Network errors and timeouts (None), 408, 425, 429 and 5xx are worth another try."""
    return status is None or status in (408, 425, 429) or status >= 500


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    seconds: float = (when - now).total_seconds()
    return max(0.0, seconds)


def backoff_delay(
    target: TargetSpec, failed_attempt: int, retry_after: float | None, jitter: float
) -> float:
    """Exponential backoff with full jitter; a server's Retry-After wins (up to a cap)."""
    if retry_after is not None:
        return min(retry_after, RETRY_AFTER_CAP_S)
    return full_jitter(failed_attempt, target.backoff_s, target.backoff_max_s, jitter)


@dataclass(frozen=True)
class DeadLetter:
    request: DispatchRequest
    body: bytes
    target: str
    attempts: int
    error: str


@dataclass
class _Job:
    request: DispatchRequest
    body: bytes
    done: Callable[[], Awaitable[None]]
    remaining: list[int]  # shared by the job's targets: the last one to finish calls done


class MissingTargetSecret(HookstreamError):
    pass


class HttpDispatcher:
    def __init__(
        self,
        targets: dict[str, TargetSpec],
        dead_letter: Callable[[DeadLetter], Awaitable[None]],
        *,
        concurrency: int = 4,
        queue_size: int = 10_000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.targets = targets
        self.secrets = {name: self._secret(name, spec) for name, spec in targets.items()}
        self._dead_letter = dead_letter
        self._concurrency = concurrency
        self._queues: dict[str, asyncio.Queue[_Job]] = {
            name: asyncio.Queue(queue_size) for name in targets
        }
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._sleep = sleep
        self._jitter = jitter

    @staticmethod
    def _secret(name: str, spec: TargetSpec) -> bytes:
        value = os.environ.get(spec.secret_env, "")
        if not value:
            raise MissingTargetSecret(
                f"target {name!r}: environment variable {spec.secret_env} is not set"
            )
        return value.encode()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(headers={"User-Agent": "hookstream-dispatch"})
        self._workers = [
            asyncio.create_task(self._work(name), name=f"dispatch-{name}-{i}")
            for name in self.targets
            for i in range(self._concurrency)
        ]

    async def stop(self, drain_s: float = 10.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_s):
                for queue in self._queues.values():
                    await queue.join()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def submit(
        self, request: DispatchRequest, body: bytes, done: Callable[[], Awaitable[None]]
    ) -> None:
        """Queue ``request`` for each of its targets; ``done`` runs when all have finished."""
        names = [t for t in request.targets if t in self._queues]
        if not names:
            await done()
            return
        if self._session is None:
            await self.start()
        job = _Job(request, body, done, [len(names)])
        for name in names:
            # Waits only when this target's queue is full: backpressure, not head-of-line.
            await self._queues[name].put(job)

    async def _work(self, name: str) -> None:
        queue = self._queues[name]
        while True:
            job = await queue.get()
            try:
                await self._deliver(name, job)
            except Exception:  # a bug here must not kill the lane
                log.exception("dispatch to %s failed unexpectedly", name)
            finally:
                queue.task_done()
                job.remaining[0] -= 1
                if job.remaining[0] == 0:
                    await job.done()

    async def _deliver(self, name: str, job: _Job) -> None:
        spec = self.targets[name]
        secret = self.secrets[name]
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": job.request.dispatch_id,
            "X-Hookstream-Dispatch": job.request.dispatch_id,
            # The construction of GitHub's X-Hub-Signature-256: receivers verify alike.
            SIGNATURE_HEADER: sign(job.body, secret),
        }
        assert self._session is not None
        error = ""
        for attempt in range(1, spec.max_attempts + 1):
            status: int | None = None
            retry_after: float | None = None
            try:
                async with self._session.post(
                    spec.url,
                    data=job.body,
                    headers=headers | {"X-Hookstream-Attempt": str(attempt)},
                    timeout=aiohttp.ClientTimeout(total=spec.timeout_s),
                ) as response:
                    status = response.status
                    if 200 <= status < 300:
                        return
                    retry_after = parse_retry_after(
                        response.headers.get("Retry-After"), datetime.now(UTC)
                    )
                    error = f"HTTP {status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if not retryable(status) or attempt == spec.max_attempts:
                break
            await self._sleep(backoff_delay(spec, attempt, retry_after, self._jitter()))
        log.warning("dispatch %s to %s gave up: %s", job.request.dispatch_id, name, error)
        await self._dead_letter(DeadLetter(job.request, job.body, name, attempt, error))

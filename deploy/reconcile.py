"""``hookstream reconcile``: find the deliveries GitHub failed to bring, and redeliver them.

GitHub lists the App's webhook deliveries of the last 3 days with one row per attempt
(``GET /app/hook/deliveries``, authenticated with the App's JWT, newest first, in cursor
pages that gidgethub follows by their ``Link`` header). A redelivery keeps its GUID, so
the rows are grouped by GUID. A GUID is **missing** when none of its attempts got a 2xx
answer (a failed connection has status code 0) *and* no record of ``github.events``
carries it: GitHub may have seen a timeout for a delivery the ingress did write.

A dry run lists what is missing; ``--apply`` asks GitHub to redeliver the latest attempt
of each missing GUID (``POST /app/hook/deliveries/{id}/attempts``, answered 202).
Rate limits (``retry-after``, or ``x-ratelimit-remaining: 0`` until
``x-ratelimit-reset``) are waited out, with a word on stderr; 5xx answers are retried
with the project's backoff.

The decisions — the window, grouping attempts, what is missing, when to retry, what to
print — are the pure functions at the top; the GitHub and Kafka I/O comes after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import aiohttp
import gidgethub
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from gidgethub.aiohttp import GitHubAPI

from processors.backoff import full_jitter
from processors.checks.github import AppCredentials, CredentialsError, rate_limit_wait
from schemas.envelope import RecordHeader, utc_now
from schemas.errors import HookstreamError
from schemas.settings import Settings

GITHUB_KEEPS = timedelta(days=3)  # github.com keeps an App's deliveries for 3 days
DEFAULT_SINCE = "72h"
PER_PAGE = 100
# The ingress stamps a record when it gets the delivery, GitHub when it sends it: read
# the log from a little before the window, for the clocks' sake.
LOG_MARGIN = timedelta(minutes=15)
MAX_ATTEMPTS = 6
BACKOFF_S, BACKOFF_MAX_S = 0.5, 30.0

LIST_URL = "/app/hook/deliveries{?per_page}"
REDELIVER_URL = "/app/hook/deliveries/{delivery_id}/attempts"


class ReconcileRefused(HookstreamError):
    """The arguments or the configuration cannot be used (exit 2)."""


class ReconcileFailed(HookstreamError):
    """GitHub or Kafka could not be read (exit 1)."""


# --- the window ------------------------------------------------------------------------

_DURATION = re.compile(r"(?:\d+[smhd])+")
_PART = re.compile(r"(\d+)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> timedelta:
    """``72h``, ``90m``, ``2d``, ``1h30m``: how far back to look; at most GitHub's 3 days."""
    cleaned = text.strip().lower()
    if not _DURATION.fullmatch(cleaned):
        raise ReconcileRefused(f"--since {text!r}: not a duration (say 72h, 90m, 2d or 1h30m)")
    since = timedelta(seconds=sum(int(n) * _UNIT_S[unit] for n, unit in _PART.findall(cleaned)))
    if since <= timedelta(0):
        raise ReconcileRefused(f"--since {text!r}: the window must be longer than nothing")
    if since > GITHUB_KEEPS:
        raise ReconcileRefused(
            f"--since {text}: GitHub keeps an App's deliveries for 3 days only; ask for 72h or less"
        )
    return since


def window_start(now: datetime, since: timedelta) -> datetime:
    return now - since


def log_start(start: datetime) -> datetime:
    """Where reading ``github.events`` begins (by record timestamp) for a window."""
    return start - LOG_MARGIN


# --- attempts and deliveries -----------------------------------------------------------


def _time(value: str) -> datetime:
    at = datetime.fromisoformat(value)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Attempt:
    """One row of ``GET /app/hook/deliveries``: one attempt to deliver one GUID."""

    id: int
    guid: str
    delivered_at: datetime
    redelivery: bool
    status_code: int  # 0: no HTTP answer (failed to connect, timed out)
    status: str
    event: str
    action: str | None

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> Attempt:
        action = item.get("action")
        return cls(
            id=int(item["id"]),
            guid=str(item["guid"]),
            delivered_at=_time(str(item["delivered_at"])),
            redelivery=bool(item.get("redelivery")),
            status_code=int(item.get("status_code") or 0),
            status=str(item.get("status") or ""),
            event=str(item.get("event") or ""),
            action=action if isinstance(action, str) else None,
        )

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status_code < 300


def in_window(attempt: Attempt, start: datetime) -> bool:
    return attempt.delivered_at >= start


@dataclass(frozen=True)
class Delivery:
    """Every attempt GitHub made at one GUID, oldest first."""

    guid: str
    attempts: tuple[Attempt, ...]

    @property
    def first(self) -> Attempt:
        return self.attempts[0]

    @property
    def latest(self) -> Attempt:
        """The attempt to redeliver: GitHub redelivers by attempt id."""
        return self.attempts[-1]

    @property
    def succeeded(self) -> bool:
        return any(a.succeeded for a in self.attempts)

    @property
    def name(self) -> str:
        event, action = self.first.event, self.first.action
        return f"{event}.{action}" if action else event


def group(attempts: Iterable[Attempt]) -> list[Delivery]:
    """Attempts grouped by GUID; deliveries in the order GitHub first tried them."""
    by_guid: defaultdict[str, list[Attempt]] = defaultdict(list)
    for attempt in attempts:
        by_guid[attempt.guid].append(attempt)
    deliveries = [
        Delivery(guid, tuple(sorted(rows, key=lambda a: (a.delivered_at, a.id))))
        for guid, rows in by_guid.items()
    ]
    return sorted(deliveries, key=lambda d: (d.first.delivered_at, d.first.id))


def failed(deliveries: Iterable[Delivery]) -> list[Delivery]:
    """The deliveries GitHub never saw a 2xx for."""
    return [d for d in deliveries if not d.succeeded]


def missing(deliveries: Iterable[Delivery], logged: Collection[str]) -> list[Delivery]:
    """Failed at GitHub and absent from the event log: what to redeliver."""
    return [d for d in failed(deliveries) if d.guid not in logged]


def logged_guid(headers: Iterable[tuple[str, bytes]]) -> str | None:
    """The delivery GUID an event-log record carries in its headers."""
    for name, value in headers:
        if name.lower() == RecordHeader.DELIVERY:
            return value.decode("utf-8", "replace")
    return None


# --- retrying --------------------------------------------------------------------------


class Retry(NamedTuple):
    seconds: float
    reason: str


def retry(
    status: int, headers: Mapping[str, str], attempt: int, now: float, jitter: float
) -> Retry | None:
    """After a failed ``attempt``: how long to wait before the next, or None to give up."""
    if attempt >= MAX_ATTEMPTS:
        return None
    if status in (403, 429) and (wait := rate_limit_wait(headers, now)) is not None:
        said = "retry-after" if headers.get("retry-after") else "until x-ratelimit-reset"
        return Retry(wait, f"rate limited (HTTP {status}, {said})")
    if status >= 500:
        return Retry(full_jitter(attempt, BACKOFF_S, BACKOFF_MAX_S, jitter), f"HTTP {status}")
    return None


# --- what is printed -------------------------------------------------------------------


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(delivery: Delivery) -> str:
    """One line per missing GUID: guid, event.action, first delivered, the last status."""
    last = delivery.latest
    tries = len(delivery.attempts)
    return (
        f"{delivery.guid}  {delivery.name:<32} {_at(delivery.first.delivered_at)}  "
        f"last {last.status_code} {last.status or '-'} "
        f"({tries} attempt{'' if tries == 1 else 's'})"
    )


def summary(
    deliveries: Sequence[Delivery], absent: Sequence[Delivery], start: datetime, topic: str
) -> str:
    failures = len(failed(deliveries))
    noun = "delivery" if len(deliveries) == 1 else "deliveries"
    seen = f"{len(deliveries)} {noun} since {_at(start)}"
    if not absent:
        if failures:
            return f"nothing missing: {seen}; the {failures} that failed at GitHub are in {topic}"
        return f"nothing missing: {seen}, none failed"
    return (
        f"{len(absent)} missing from {topic}: {seen}, {failures} failed at GitHub, "
        f"{failures - len(absent)} of those reached {topic} anyway"
    )


# --- GitHub ----------------------------------------------------------------------------


class AppClient(GitHubAPI):
    """gidgethub over aiohttp as the App itself (its JWT, minted and renewed by gidgethub),
    waiting out rate limits and retrying 5xx answers on every request."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        credentials: AppCredentials,
        base_url: str,
        *,
        say: Callable[[str], None],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            session,
            "hookstream",
            app_id=credentials.app_id,
            private_key=credentials.private_key,
            base_url=base_url,
        )
        self._say, self._sleep, self._jitter, self._clock = say, sleep, jitter, clock

    async def sleep(self, seconds: float) -> None:
        await self._sleep(seconds)

    async def handle_rate_limit_error(
        self, *, method: str, url: str, exception: gidgethub.HTTPException, attempt: int
    ) -> bool:
        status = int(exception.status_code)
        wait = retry(status, exception.headers, attempt, self._clock(), self._jitter())
        if wait is None:
            return False
        path = url.removeprefix(self.base_url.rstrip("/")).split("?", 1)[0]
        self._say(f"{method} {path}: {wait.reason}: waiting {wait.seconds:.1f} s")
        await self.sleep(wait.seconds)
        return True


async def list_attempts(gh: GitHubAPI, start: datetime) -> list[Attempt]:
    """Every attempt since ``start``; stops paging at the first older one (newest first)."""
    attempts: list[Attempt] = []
    try:
        async with contextlib.aclosing(gh.getiter(LIST_URL, {"per_page": PER_PAGE})) as rows:
            async for row in rows:
                attempt = Attempt.from_api(row)
                if not in_window(attempt, start):
                    break
                attempts.append(attempt)
    except gidgethub.HTTPException as exc:
        raise ReconcileFailed(
            f"GET /app/hook/deliveries: HTTP {int(exc.status_code)} {exc}".rstrip()
        ) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ReconcileFailed(
            f"GET /app/hook/deliveries: no answer from {gh.base_url} ({type(exc).__name__})"
        ) from None
    return attempts


async def redeliver(gh: GitHubAPI, delivery: Delivery) -> str | None:
    """Ask GitHub to redeliver; None when it accepted (202), else what went wrong."""
    try:
        await gh.post(REDELIVER_URL, {"delivery_id": delivery.latest.id}, data=b"")
    except gidgethub.HTTPException as exc:
        return f"HTTP {int(exc.status_code)} {exc}".rstrip()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"no answer ({type(exc).__name__})"
    return None


# --- the event log ---------------------------------------------------------------------


async def logged_guids(settings: Settings, since: datetime, wanted: Collection[str]) -> set[str]:
    """Which of ``wanted`` the event log holds, reading only the headers of the records
    stamped at or after ``since`` (``offsets_for_times``), and stopping once all are found."""
    found: set[str] = set()
    wanted = set(wanted)
    if not wanted:
        return found
    topic = settings.events_topic
    partitions = await _partitions(settings.kafka_bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id="hookstream-reconcile",
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        since_ms = int(since.timestamp() * 1000)
        starts = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
        end = await consumer.end_offsets(partitions)
        begin = {tp: at.offset for tp, at in starts.items() if at is not None}
        reading = [tp for tp in partitions if tp in begin and begin[tp] < end[tp]]
        if not reading:
            return found  # nothing stamped in the window
        consumer.assign(reading)
        for tp in reading:
            consumer.seek(tp, begin[tp])
        while reading and not found >= wanted:
            batch = await consumer.getmany(*reading, timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    guid = logged_guid(record.headers)
                    if guid is not None and guid in wanted:
                        found.add(guid)
            reading = [tp for tp in reading if await consumer.position(tp) < end[tp]]
    finally:
        await consumer.stop()
    return found


async def _partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    """Every partition of ``topic`` (a consumer's own metadata may not know it yet)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="hookstream-reconcile")
    await admin.start()
    try:
        described = await admin.describe_topics()  # all of them: asking by name may create it
    finally:
        await admin.close()
    partitions = sorted(
        TopicPartition(topic, partition["partition"])
        for found in described
        if found["topic"] == topic
        for partition in found["partitions"]
    )
    if not partitions:
        raise ReconcileFailed(f"no topic {topic} on Kafka at {bootstrap}")
    return partitions


# --- the command -----------------------------------------------------------------------


def reconcile(settings: Settings, *, since: str = DEFAULT_SINCE, apply: bool = False) -> int:
    """``hookstream reconcile``: 0 nothing missing or all redelivered (or a dry run),
    1 a redelivery failed, 2 bad arguments or no App credentials."""
    try:
        window = parse_since(since)
        credentials = AppCredentials.from_settings(settings)
    except (ReconcileRefused, CredentialsError) as exc:
        print(f"hookstream reconcile: {exc}", file=sys.stderr)
        return 2
    if credentials is None:
        print(
            "hookstream reconcile: no GitHub App credentials: set HOOKSTREAM_GITHUB_APP_ID and "
            "HOOKSTREAM_GITHUB_PRIVATE_KEY_FILE (the App's id and its private key file)",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(_reconcile(settings, credentials, window, apply))


def _say(line: str) -> None:
    print(f"hookstream reconcile: {line}", file=sys.stderr, flush=True)


async def _reconcile(
    settings: Settings, credentials: AppCredentials, window: timedelta, apply: bool
) -> int:
    start = window_start(utc_now(), window)
    timeout = aiohttp.ClientTimeout(total=settings.github_timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        gh = AppClient(session, credentials, settings.github_api_url, say=_say)
        deliveries = group(await list_attempts(gh, start))
        wanted = {d.guid for d in failed(deliveries)}
        logged = await logged_guids(settings, log_start(start), wanted)
        absent = missing(deliveries, logged)
        for delivery in absent:
            print(describe(delivery))
        print(summary(deliveries, absent, start, settings.events_topic), flush=True)
        if not absent:
            return 0
        if not apply:
            print("dry run: nothing was redelivered; --apply asks GitHub to redeliver these")
            return 0
        refused = 0
        for delivery in absent:
            problem = await redeliver(gh, delivery)
            attempt = f"{delivery.guid} (attempt {delivery.latest.id})"
            if problem is None:
                print(f"redelivered {attempt}: 202 Accepted", flush=True)
            else:
                refused += 1
                print(f"FAILED {attempt}: {problem}", flush=True)
    print(f"redelivered {len(absent) - refused} of {len(absent)}; {refused} failed")
    return 1 if refused else 0

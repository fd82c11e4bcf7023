"""``hookstream reconcile``'s decisions: the window, grouping attempts, what is missing,
when to retry; and the listing's paging, against a scripted gidgethub (no network)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import aiohttp
import orjson
import pytest

from deploy.reconcile import (
    LOG_MARGIN,
    MAX_ATTEMPTS,
    AppClient,
    Attempt,
    ReconcileRefused,
    describe,
    group,
    in_window,
    list_attempts,
    log_start,
    logged_guid,
    missing,
    parse_since,
    retry,
    summary,
    window_start,
)
from processors.checks.github import AppCredentials
from schemas.envelope import RecordHeader
from tests.fake_github.credentials import APP_ID, PRIVATE

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
_ids = iter(range(1, 10_000))


def attempt(
    guid: str, status_code: int, minutes_ago: float, *, redelivery: bool = False, **item: Any
) -> Attempt:
    return Attempt.from_api({
        "id": next(_ids), "guid": guid, "redelivery": redelivery, "status_code": status_code,
        "delivered_at": (NOW - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "status": "OK" if 200 <= status_code < 300 else "failed", "event": "pull_request",
        "action": "opened", **item,
    })  # fmt: skip


# --- grouping and what is missing ------------------------------------------------------


def test_attempts_are_grouped_by_guid_oldest_first_and_the_latest_is_redelivered() -> None:
    first = attempt("g-1", 502, 50)
    again = attempt("g-1", 502, 20, redelivery=True)
    other = attempt("g-2", 200, 40)
    deliveries = group([again, other, first])  # newest first, as GitHub lists them
    assert [d.guid for d in deliveries] == ["g-1", "g-2"]
    assert deliveries[0].attempts == (first, again)
    assert deliveries[0].latest == again
    assert deliveries[0].first.delivered_at == NOW - timedelta(minutes=50)
    assert deliveries[0].name == "pull_request.opened"


def test_a_failed_connection_has_status_0_and_is_missing() -> None:
    [delivery] = group([attempt("g-0", 0, 5, status="failed to connect")])
    assert not delivery.succeeded
    assert missing([delivery], logged=set()) == [delivery]


def test_any_2xx_attempt_means_github_delivered_it() -> None:
    for code in (200, 202, 204):
        assert group([attempt("g", code, 5)])[0].succeeded
    for code in (0, 301, 400, 404, 500, 502, 504):
        assert not group([attempt("g", code, 5)])[0].succeeded


def test_a_delivery_redelivered_successfully_later_is_not_missing() -> None:
    deliveries = group([
        attempt("late", 202, 10, redelivery=True), attempt("late", 0, 30),
        attempt("never", 502, 25),
    ])  # fmt: skip
    assert [d.guid for d in missing(deliveries, logged=set())] == ["never"]


def test_a_failure_github_saw_but_the_log_has_is_not_missing() -> None:
    deliveries = group([attempt("timed-out", 0, 15, status="timed out"), attempt("lost", 0, 14)])
    assert [d.guid for d in missing(deliveries, logged={"timed-out"})] == ["lost"]


def test_an_event_without_an_action_is_named_by_the_event() -> None:
    [push] = group([attempt("p", 0, 1, event="push", action=None)])
    assert push.name == "push"
    line = describe(push)
    assert line.startswith("p  push ")
    assert "2026-11-26T08:59:00Z" in line
    assert line.endswith("last 0 failed (1 attempt)")


def test_the_log_records_guid_is_read_from_its_headers() -> None:
    headers = [(RecordHeader.EVENT, b"push"), (RecordHeader.DELIVERY, b"g-7")]
    assert logged_guid(headers) == "g-7"
    assert logged_guid([(RecordHeader.EVENT, b"push")]) is None


def test_the_summary_says_what_failed_and_what_reached_the_log_anyway() -> None:
    deliveries = group([attempt("a", 0, 5), attempt("b", 502, 4), attempt("c", 202, 3)])
    start = NOW - timedelta(hours=1)
    absent = missing(deliveries, logged={"a"})
    assert summary(deliveries, absent, start, "github.events") == (
        "1 missing from github.events: 3 deliveries since 2026-11-26T08:00:00Z, "
        "2 failed at GitHub, 1 of those reached github.events anyway"
    )
    assert summary(deliveries, [], start, "github.events").startswith("nothing missing: ")


# --- the window ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("72h", timedelta(hours=72)), ("3d", timedelta(days=3)), ("90m", timedelta(minutes=90)),
     ("1h30m", timedelta(minutes=90)), (" 45s ", timedelta(seconds=45)),
     ("2D", timedelta(days=2))],
)  # fmt: skip
def test_since_reads_durations(text: str, expected: timedelta) -> None:
    assert parse_since(text) == expected


@pytest.mark.parametrize("text", ["73h", "4d", "3d1s"])
def test_since_refuses_more_than_the_3_days_github_keeps(text: str) -> None:
    with pytest.raises(ReconcileRefused, match="GitHub keeps an App's deliveries for 3 days"):
        parse_since(text)


@pytest.mark.parametrize("text", ["", "72", "h", "1.5h", "-1h", "1w", "0h", "0s0m"])
def test_since_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ReconcileRefused, match="--since"):
        parse_since(text)


def test_the_window_and_where_reading_the_log_starts() -> None:
    start = window_start(NOW, timedelta(hours=2))
    assert start == NOW - timedelta(hours=2)
    assert log_start(start) == start - LOG_MARGIN
    assert in_window(attempt("edge", 0, 120), start)
    assert not in_window(attempt("old", 0, 121), start)


# --- retrying --------------------------------------------------------------------------


def test_a_primary_rate_limit_waits_until_the_reset() -> None:
    now = NOW.timestamp()
    headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now) + 30)}
    wait = retry(403, headers, 1, now, jitter=0.5)
    assert wait is not None
    assert wait.seconds == 30.0
    assert "x-ratelimit-reset" in wait.reason


def test_a_secondary_rate_limit_waits_retry_after() -> None:
    wait = retry(429, {"retry-after": "7"}, 2, NOW.timestamp(), jitter=0.5)
    assert wait is not None
    assert (wait.seconds, "retry-after" in wait.reason) == (7.0, True)


def test_server_errors_back_off_and_refusals_do_not_retry() -> None:
    assert retry(502, {}, 1, 0.0, jitter=1.0) == (0.5, "HTTP 502")
    assert retry(503, {}, 3, 0.0, jitter=1.0) == (2.0, "HTTP 503")
    assert retry(403, {"x-ratelimit-remaining": "12"}, 1, 0.0, jitter=1.0) is None  # forbidden
    assert retry(404, {}, 1, 0.0, jitter=1.0) is None
    assert retry(422, {}, 1, 0.0, jitter=1.0) is None
    assert retry(502, {}, MAX_ATTEMPTS, 0.0, jitter=1.0) is None  # gave up


# --- the listing, against a scripted GitHub --------------------------------------------

BASE = "https://api.github.com"


class ScriptedGitHub(AppClient):
    """Answers from a script instead of the network; records requests and waits."""

    def __init__(self, answers: list[tuple[int, dict[str, str], Any]]) -> None:
        self.requests: list[tuple[str, str, Mapping[str, str]]] = []
        self.waits: list[float] = []
        self.said: list[str] = []
        self._answers = answers

        async def sleep(seconds: float) -> None:
            self.waits.append(seconds)

        super().__init__(
            cast(aiohttp.ClientSession, None), AppCredentials(str(APP_ID), PRIVATE), BASE,
            say=self.said.append, sleep=sleep, jitter=lambda: 1.0, clock=NOW.timestamp,
        )  # fmt: skip

    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, Mapping[str, str], bytes]:
        self.requests.append((method, url, headers))
        status, answer_headers, payload = self._answers.pop(0)
        answer_headers = {"content-type": "application/json", **answer_headers}
        return status, answer_headers, orjson.dumps(payload)


def row(guid: str, minutes_ago: float, status_code: int = 202) -> dict[str, Any]:
    at = NOW - timedelta(minutes=minutes_ago)
    return {
        "id": next(_ids), "guid": guid, "delivered_at": at.isoformat(), "redelivery": False,
        "status_code": status_code, "status": "OK", "event": "push", "action": None,
    }  # fmt: skip


def link(cursor: str) -> dict[str, str]:
    return {"link": f'<{BASE}/app/hook/deliveries?per_page=100&cursor={cursor}>; rel="next"'}


async def test_the_listing_follows_the_link_cursor_and_stops_at_the_window() -> None:
    gh = ScriptedGitHub([
        (200, link("v1_2"), [row("a", 1), row("b", 2, 0)]),
        (200, link("v1_3"), [row("c", 3), row("old", 200, 0)]),  # older than the window
        (200, {}, [row("never-asked", 300)]),
    ])  # fmt: skip
    attempts = await list_attempts(gh, NOW - timedelta(hours=1))
    assert [a.guid for a in attempts] == ["a", "b", "c"]
    assert [url for _, url, _ in gh.requests] == [
        f"{BASE}/app/hook/deliveries?per_page=100",
        f"{BASE}/app/hook/deliveries?per_page=100&cursor=v1_2",
    ]
    method, _, headers = gh.requests[0]
    assert method == "GET"
    assert headers["authorization"].startswith("bearer ")  # the App's JWT


async def test_the_listing_follows_every_page_to_the_end() -> None:
    gh = ScriptedGitHub([(200, link("v1_9"), [row("a", 1)]), (200, {}, [row("b", 2)])])
    assert [a.guid for a in await list_attempts(gh, NOW - timedelta(hours=72))] == ["a", "b"]


async def test_the_listing_waits_out_rate_limits_and_retries_server_errors() -> None:
    reset = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0",
             "x-ratelimit-reset": str(int(NOW.timestamp()) + 12)}  # fmt: skip
    gh = ScriptedGitHub([
        (403, reset, {"message": "API rate limit exceeded"}),
        (429, {"retry-after": "3"}, {"message": "secondary rate limit"}),
        (502, {}, {"message": "Bad Gateway"}),
        (200, {}, [row("a", 1)]),
    ])  # fmt: skip
    assert [a.guid for a in await list_attempts(gh, NOW - timedelta(hours=1))] == ["a"]
    assert gh.waits == [12.0, 3.0, 2.0]
    assert len(gh.said) == 3
    assert gh.said[0].startswith("GET /app/hook/deliveries: rate limited (HTTP 403")
    assert "waiting 12.0 s" in gh.said[0]

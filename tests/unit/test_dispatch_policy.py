"""HTTP dispatch decisions: what is retried, how long to wait, how requests are signed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from processors.triggers.http_dispatch import (
    RETRY_AFTER_CAP_S,
    backoff_delay,
    parse_retry_after,
    retryable,
)
from processors.triggers.rules import TargetSpec

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
TARGET = TargetSpec(url="http://x", secret_env="S", backoff_s=0.5, backoff_max_s=8.0)


@pytest.mark.parametrize(
    ("status", "again"),
    [(None, True), (408, True), (425, True), (429, True), (500, True), (503, True),
     (400, False), (401, False), (404, False), (422, False)],
)  # fmt: skip
def test_retryable(status: int | None, again: bool) -> None:
    assert retryable(status) is again


def test_retry_after_in_seconds_and_as_a_date() -> None:
    assert parse_retry_after("7", NOW) == 7.0
    assert parse_retry_after(format_datetime(NOW + timedelta(seconds=30), usegmt=True), NOW) == 30
    assert parse_retry_after(format_datetime(NOW - timedelta(seconds=30), usegmt=True), NOW) == 0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    assert [backoff_delay(TARGET, n, None, 1.0) for n in range(1, 7)] == [
        0.5, 1.0, 2.0, 4.0, 8.0, 8.0,
    ]  # fmt: skip
    assert backoff_delay(TARGET, 3, None, 0.25) == 0.5
    assert backoff_delay(TARGET, 3, None, 0.0) == 0.0


def test_retry_after_wins_over_backoff_up_to_a_cap() -> None:
    assert backoff_delay(TARGET, 1, 20.0, 1.0) == 20.0
    assert backoff_delay(TARGET, 1, 1e6, 1.0) == RETRY_AFTER_CAP_S

"""Runner status reports: authentication and validation before anything is recorded."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ingress.delivery import Rejection
from ingress.run_status import authorize_runner, parse_report

NOW = datetime(2026, 11, 26, tzinfo=UTC)
TOKENS = (b"token-a", b"token-b")


@pytest.mark.parametrize("header", ["Bearer token-a", "bearer token-b", "Bearer  token-a "])
def test_known_tokens_are_accepted(header: str) -> None:
    authorize_runner(header, TOKENS)


@pytest.mark.parametrize(
    ("header", "status", "fragment"),
    [
        (None, 401, "missing"),
        ("token-a", 401, "missing"),
        ("Basic token-a", 401, "missing"),
        ("Bearer ", 401, "missing"),
        ("Bearer token-c", 401, "unknown runner token"),
    ],
)
def test_bad_tokens_are_refused(header: str | None, status: int, fragment: str) -> None:
    with pytest.raises(Rejection) as info:
        authorize_runner(header, TOKENS)
    assert (info.value.status, fragment in info.value.message) == (status, True)


def test_no_configured_token_disables_the_endpoint() -> None:
    with pytest.raises(Rejection) as info:
        authorize_runner("Bearer x", ())
    assert info.value.status == 404
    assert "HOOKSTREAM_RUNNER_TOKENS" in info.value.message


def report(**fields: Any) -> bytes:
    return orjson.dumps(fields)


def test_a_completed_report_with_output_is_recorded_with_its_run_id() -> None:
    body = report(
        status="completed",
        conclusion="failure",
        dispatch_id="d-1",
        output={
            "title": "2 tests failed",
            "summary": "see annotations",
            "annotations": [
                {"path": "app.py", "start_line": 3, "end_line": 4,
                 "annotation_level": "failure", "message": "boom"},
            ],
        },
    )  # fmt: skip
    record = parse_report("run-42", "application/json", body, NOW)
    assert (record.run_id, record.status, record.conclusion) == ("run-42", "completed", "failure")
    assert record.output is not None
    assert record.output.annotations[0].path == "app.py"
    recorded = orjson.loads(record.to_json())
    assert recorded["received_at"] == "2026-11-26T00:00:00Z"
    assert "started_at" not in recorded  # unset fields are left out


@pytest.mark.parametrize("status", ["queued", "in_progress"])
def test_reports_before_completion(status: str) -> None:
    assert parse_report("r1", "application/json", report(status=status), NOW).status == status


@pytest.mark.parametrize(
    ("run_id", "content_type", "body", "status", "fragment"),
    [
        ("r1", "application/json", report(status="completed"), 400, "needs a conclusion"),
        ("r1", "application/json", report(status="queued", conclusion="success"), 400,
         "no conclusion yet"),
        ("r1", "application/json", report(status="done"), 400, "status"),
        ("r1", "application/json", report(status="queued", colour="red"), 400, "colour"),
        ("r1", "application/json", b"{not json", 400, "Invalid JSON"),
        ("r1", "application/json", report(status="completed", conclusion="success",
         output={"title": "t", "summary": "s", "annotations": [{"path": "a", "start_line": 5,
         "end_line": 2, "annotation_level": "notice", "message": "m"}]}), 400, "end_line"),
        ("r1", "text/plain", report(status="queued"), 415, "application/json"),
        ("../etc", "application/json", report(status="queued"), 400, "run id"),
    ],
)  # fmt: skip
def test_bad_reports_are_refused(
    run_id: str, content_type: str, body: bytes, status: int, fragment: str
) -> None:
    with pytest.raises(Rejection) as info:
        parse_report(run_id, content_type, body, NOW)
    assert info.value.status == status
    assert fragment in info.value.message

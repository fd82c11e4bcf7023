"""The Checks API requests, as data: GitHub's byte limits, 50 annotations a request."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from processors.checks.calls import (
    CUT_NOTE,
    MAX_OUTPUT_BYTES,
    create,
    cut_utf8,
    details_url,
    lookup,
    updates,
)
from schemas.dispatch import Actor, CheckAction, DeliveryRef, DispatchRequest
from schemas.run_status import RunStatusRecord

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
REQUEST = DispatchRequest(
    dispatch_id="d1", workflow="ci", trigger="t", repository="acme/api", sha="c" * 40,
    actor=Actor(), delivery=DeliveryRef(hook_id="1", delivery_id="g", event="push"),
    installation_id=1, check_name="CI / build",
    check_actions=(CheckAction(label="Deploy", description="Ship it", identifier="deploy"),),
)  # fmt: skip


@pytest.mark.parametrize("char", ["a", "é", "€", "🚀"])  # 1, 2, 3 and 4 UTF-8 bytes
def test_text_over_the_limit_is_cut_between_characters_with_a_note(char: str) -> None:
    text = char * (MAX_OUTPUT_BYTES // len(char.encode()) + 10)
    cut = cut_utf8(text)
    assert len(cut.encode()) <= MAX_OUTPUT_BYTES
    assert cut.endswith(CUT_NOTE)
    kept = cut.removesuffix(CUT_NOTE)
    assert set(kept) == {char}
    assert len(kept.encode()) > MAX_OUTPUT_BYTES - len(CUT_NOTE.encode()) - 4


def test_text_that_fits_is_left_alone() -> None:
    exactly = "x" * MAX_OUTPUT_BYTES
    assert cut_utf8(exactly) is exactly


def test_a_create_names_the_run_by_its_dispatch_and_carries_its_buttons() -> None:
    call = create(REQUEST, "https://ci/d1")
    assert (call.method, call.url_vars) == ("POST", {"owner": "acme", "repo": "api"})
    assert call.body == {
        "name": "CI / build", "head_sha": "c" * 40, "external_id": "d1", "status": "queued",
        "details_url": "https://ci/d1",
        "actions": [{"label": "Deploy", "description": "Ship it", "identifier": "deploy"}],
    }  # fmt: skip
    found = lookup(REQUEST)
    assert found.url_vars["check_name"] == "CI / build"
    assert found.url_vars["filter"] == "all"


def test_a_completed_report_without_output_is_one_patch() -> None:
    report = RunStatusRecord(status="completed", conclusion="success", run_id="r",
                             received_at=T0)  # fmt: skip
    [call] = updates(REQUEST, 5, report, None)
    assert call.body == {"status": "completed", "conclusion": "success",
                         "completed_at": "2026-11-26T09:00:00Z"}  # fmt: skip


def test_a_status_github_actions_alone_may_set_is_never_sent() -> None:
    report = RunStatusRecord.model_construct(
        status="waiting",  # type: ignore[arg-type]  # what a bad runner might write
        conclusion=None, run_id="r", received_at=T0, output=None,
        details_url=None, started_at=None, completed_at=None,
    )  # fmt: skip
    with pytest.raises(ValueError, match="may not set"):
        updates(REQUEST, 5, report, None)


def test_details_urls_are_filled_from_the_template() -> None:
    assert details_url(None, "d1") is None
    template = "https://ci.example/runs/{run_id}?dispatch={dispatch_id}"
    assert details_url(template, "d1", "r7") == "https://ci.example/runs/r7?dispatch=d1"

"""Routing records to check-run machines: what each record becomes, and what is ignored."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from processors.checks.inputs import (
    INPUT_RECORDS,
    DispatchedRecord,
    GitHubRecord,
    RerunRecord,
    Suite,
    SuiteRecord,
    route_delivery,
    route_dispatch,
    route_report,
    suite_key,
)
from processors.checks.machine import Dispatched, GitHubSaw, RerunRequested
from schemas.dispatch import Actor, DeliveryRef, DispatchRequest
from schemas.envelope import Envelope, RecordHeader
from schemas.run_status import RunStatusRecord
from tests.helpers import sample_payload

APP_ID = "31337"
DISPATCH = "6a1f2f0e-7d7b-5c55-8f33-6f0c1c1c0a01"
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def envelope(event: str, payload: dict[str, Any], delivery: str = "d-9") -> Envelope:
    return Envelope.from_record(
        [(RecordHeader.EVENT, event.encode()), (RecordHeader.DELIVERY, delivery.encode()),
         (RecordHeader.HOOK_ID, b"1"), (RecordHeader.RECEIVED_AT, T0.isoformat().encode())],
        orjson.dumps(payload),
    )  # fmt: skip


def ours(name: str, external_id: str | None = DISPATCH) -> dict[str, Any]:
    payload = sample_payload(name)
    subject = payload["check_run"] if "check_run" in payload else payload["check_suite"]
    subject["app"]["id"] = int(APP_ID)
    if "check_run" in payload:
        subject["external_id"] = external_id
    return payload


def request(**changes: Any) -> DispatchRequest:
    base = DispatchRequest(
        dispatch_id=DISPATCH, workflow="ci", trigger="github:*/*:pull_request",
        repository="acme/api", repository_id=7, sha="b" * 40,
        actor=Actor(github_id=1), delivery=DeliveryRef(hook_id="1", delivery_id="d", event="x"),
        installation_id=42, check_name="ci", requested_at=T0,
    )  # fmt: skip
    return base.model_copy(update=changes)


def test_a_dispatch_with_a_sha_and_an_installation_gets_a_machine_and_a_suite_entry() -> None:
    routed = route_dispatch(request())
    [record] = routed.inputs
    assert isinstance(record, DispatchedRecord)
    assert isinstance(record.as_input(), Dispatched)
    [(key, suite)] = routed.suites
    assert key == suite_key(7, "b" * 40) == b"7/" + b"b" * 40
    assert (suite.workflow, suite.dispatch_id) == ("ci", DISPATCH)


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"check_name": None}, "check: false"),
        ({"sha": None}, "no commit sha"),
        ({"installation_id": None}, "no GitHub App installation"),
    ],
)
def test_dispatches_without_a_check_run_are_ignored(changes: dict[str, Any], why: str) -> None:
    routed = route_dispatch(request(**changes))
    assert (routed.inputs, routed.suites) == ((), ())
    assert routed.ignored is not None
    assert why in routed.ignored


def test_a_report_goes_to_its_dispatch_and_one_without_is_ignored() -> None:
    report = RunStatusRecord(status="in_progress", dispatch_id=DISPATCH, run_id="r",
                             received_at=T0)  # fmt: skip
    [record] = route_report(report).inputs
    assert record.dispatch_id == DISPATCH
    assert route_report(report.model_copy(update={"dispatch_id": None})).ignored


@pytest.mark.parametrize("action", ["created", "completed"])
def test_our_check_run_deliveries_teach_the_machine_githubs_view(action: str) -> None:
    payload = ours(f"check_run.{action}")
    [record] = route_delivery(envelope("check_run", payload), APP_ID).inputs
    assert isinstance(record, GitHubRecord)
    seen = record.as_input()
    assert isinstance(seen, GitHubSaw)
    assert (seen.action, seen.check_run_id) == (action, payload["check_run"]["id"])
    assert seen.conclusion == payload["check_run"]["conclusion"]


def test_rerequested_and_requested_action_are_reruns() -> None:
    [plain] = route_delivery(envelope("check_run", ours("check_run.rerequested")), APP_ID).inputs
    assert isinstance(plain, RerunRecord)
    assert plain.requested_action is None
    assert plain.delivery.delivery_id == "d-9"
    payload = ours("check_run.requested_action")
    [button] = route_delivery(envelope("check_run", payload), APP_ID).inputs
    assert isinstance(button, RerunRecord)
    assert button.requested_action == payload["requested_action"]["identifier"] == "lgtm|26764"
    assert isinstance(button.as_input(), RerunRequested)


def test_check_events_of_other_apps_and_without_credentials_are_ignored() -> None:
    other = sample_payload("check_run.rerequested")  # app id 2, not ours
    assert route_delivery(envelope("check_run", other), APP_ID).ignored == "a check of another App"
    assert route_delivery(envelope("check_run", ours("check_run.rerequested")), None).ignored
    pushed = route_delivery(envelope("push", sample_payload("push")), APP_ID)
    assert pushed.ignored == "not a check event"
    no_id = ours("check_run.rerequested", external_id=None)
    assert route_delivery(envelope("check_run", no_id), APP_ID).ignored


def test_a_suite_rerequest_reruns_the_latest_dispatch_of_each_workflow() -> None:
    payload = ours("check_suite.rerequested")
    [(key, record)] = route_delivery(envelope("check_suite", payload), APP_ID).suites
    assert key == suite_key(payload["repository"]["id"], payload["check_suite"]["head_sha"])
    suite = Suite()
    for workflow, dispatch_id, minute in [("ci", "a1", 1), ("ci", "a2", 5), ("lint", "b1", 2),
                                          ("ci", "a0", 0)]:  # fmt: skip
        suite = suite.remember(SuiteRecord(kind="dispatched", workflow=workflow,
                                           dispatch_id=dispatch_id,
                                           requested_at=T0.replace(minute=minute)))  # fmt: skip
    assert [r.dispatch_id for r in suite.reruns(record)] == ["a2", "b1"]
    assert Suite.from_json(suite.to_json()) == suite


def test_input_records_survive_their_json_and_bad_ones_are_refused() -> None:
    record = route_dispatch(request()).inputs[0]
    assert INPUT_RECORDS.validate_json(record.to_json()) == record
    with pytest.raises(ValueError, match="kind"):
        INPUT_RECORDS.validate_json(b'{"kind": "nonsense", "dispatch_id": "x"}')

"""From the records the checks worker reads to machine inputs, and back (no I/O).

Three topics feed the machines: ``hookstream.dispatch`` (a dispatch was emitted),
``hookstream.run-status`` (a runner reported) and ``github.events`` (GitHub's
``check_run`` and ``check_suite`` deliveries). Each record is routed to the machine of
its dispatch through the worker's own topic keyed by dispatch id, so one dispatch's
inputs meet on one partition whatever topic they came from. ``check_suite.rerequested``
names a commit, not a dispatch: it goes through the suites topic (keyed by repository
and sha), which knows the latest dispatch of each workflow on that commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from processors.checks.machine import Dispatched, GitHubSaw, Input, Reported, RerunRequested
from schemas.dispatch import DeliveryRef, DispatchRequest
from schemas.envelope import Envelope
from schemas.run_status import RunStatusRecord


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)

    dispatch_id: str

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class DispatchedRecord(_Record):
    kind: Literal["dispatched"] = "dispatched"
    request: DispatchRequest

    def as_input(self) -> Input:
        return Dispatched(self.request)


class ReportedRecord(_Record):
    kind: Literal["reported"] = "reported"
    report: RunStatusRecord

    def as_input(self) -> Input:
        return Reported(self.report)


class GitHubRecord(_Record):
    kind: Literal["github"] = "github"
    action: Literal["created", "completed"]
    check_run_id: int
    conclusion: str | None = None
    delivery: DeliveryRef
    at: datetime

    def as_input(self) -> Input:
        return GitHubSaw(
            self.action, self.check_run_id, self.conclusion, self.delivery.delivery_id, self.at
        )


class RerunRecord(_Record):
    kind: Literal["rerun"] = "rerun"
    delivery: DeliveryRef
    at: datetime
    requested_action: str | None = None

    def as_input(self) -> Input:
        return RerunRequested(self.delivery, self.at, self.requested_action)


InputRecord = Annotated[
    DispatchedRecord | ReportedRecord | GitHubRecord | RerunRecord, Field(discriminator="kind")
]
INPUT_RECORDS: TypeAdapter[InputRecord] = TypeAdapter(InputRecord)


class SuiteRecord(BaseModel):
    """On the suites topic: a dispatch to remember, or a commit's checks to re-run."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["dispatched", "rerun"]
    workflow: str | None = None
    dispatch_id: str | None = None
    requested_at: datetime | None = None
    delivery: DeliveryRef | None = None
    at: datetime | None = None

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SuiteRecord:
        return cls.model_validate_json(raw)


def suite_key(repository_id: int | None, sha: str | None) -> bytes:
    return f"{repository_id}/{sha}".encode()


@dataclass(frozen=True)
class Routed:
    """Where a record goes: machine inputs by dispatch id, suite records by commit."""

    inputs: tuple[InputRecord, ...] = ()
    suites: tuple[tuple[bytes, SuiteRecord], ...] = ()
    ignored: str | None = None  # why nothing was routed, for the metrics and the log


def route_dispatch(request: DispatchRequest) -> Routed:
    if request.check_name is None:
        return Routed(ignored="the workflow has check: false")
    if not request.sha or request.installation_id is None or not request.repository:
        return Routed(ignored="no commit sha or no GitHub App installation")
    suite = SuiteRecord(
        kind="dispatched", workflow=request.workflow, dispatch_id=request.dispatch_id,
        requested_at=request.requested_at,
    )  # fmt: skip
    return Routed(
        inputs=(DispatchedRecord(dispatch_id=request.dispatch_id, request=request),),
        suites=((suite_key(request.repository_id, request.sha), suite),),
    )


def route_report(report: RunStatusRecord) -> Routed:
    if not report.dispatch_id:
        return Routed(ignored="the report names no dispatch_id")
    return Routed(inputs=(ReportedRecord(dispatch_id=report.dispatch_id, report=report),))


def route_delivery(envelope: Envelope, app_id: str | None) -> Routed:
    """``check_run`` and ``check_suite`` deliveries about this App's check runs."""
    if envelope.event not in ("check_run", "check_suite"):
        return Routed(ignored="not a check event")
    payload = envelope.payload
    subject: dict[str, Any] = payload.get(envelope.event) or {}
    app = subject.get("app") or {}
    if app_id is None or str(app.get("id")) != app_id:
        return Routed(ignored="a check of another App")
    delivery = DeliveryRef(
        hook_id=envelope.hook_id, delivery_id=envelope.delivery_id,
        event=envelope.event, action=envelope.action,
    )  # fmt: skip
    at = envelope.received_at
    if envelope.event == "check_suite":
        if envelope.action != "rerequested":
            return Routed(ignored=f"check_suite.{envelope.action}")
        key = suite_key(envelope.repository_id, subject.get("head_sha"))
        return Routed(suites=((key, SuiteRecord(kind="rerun", delivery=delivery, at=at)),))
    dispatch_id = subject.get("external_id")
    if not dispatch_id:
        return Routed(ignored="a check run without external_id")
    record: InputRecord
    if envelope.action in ("created", "completed"):
        record = GitHubRecord(
            dispatch_id=dispatch_id, action=envelope.action, check_run_id=subject["id"],
            conclusion=subject.get("conclusion"), delivery=delivery, at=at,
        )  # fmt: skip
    elif envelope.action in ("rerequested", "requested_action"):
        identifier = (payload.get("requested_action") or {}).get("identifier")
        record = RerunRecord(
            dispatch_id=dispatch_id, delivery=delivery, at=at,
            requested_action=identifier if envelope.action == "requested_action" else None,
        )  # fmt: skip
    else:
        return Routed(ignored=f"check_run.{envelope.action}")
    return Routed(inputs=(record,))


class Suite(BaseModel):
    """The latest dispatch of each workflow on one commit (a table value)."""

    model_config = ConfigDict(frozen=True)

    latest: dict[str, tuple[str, datetime | None]] = {}  # workflow -> (dispatch id, when)

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, raw: bytes) -> Suite:
        return cls.model_validate_json(raw)

    def remember(self, record: SuiteRecord) -> Suite:
        if record.workflow is None or record.dispatch_id is None:
            return self
        known = self.latest.get(record.workflow)
        candidate = (record.dispatch_id, record.requested_at)
        if known is not None and _order(known) >= _order(candidate):
            return self
        return Suite(latest={**self.latest, record.workflow: candidate})

    def reruns(self, record: SuiteRecord) -> tuple[RerunRecord, ...]:
        """A re-run input for the latest dispatch of every workflow on the commit."""
        if record.delivery is None or record.at is None:
            return ()
        return tuple(
            RerunRecord(dispatch_id=dispatch_id, delivery=record.delivery, at=record.at)
            for dispatch_id, _ in sorted(self.latest.values())
        )


def _order(entry: tuple[str, datetime | None]) -> tuple[float, str]:
    dispatch_id, when = entry
    return (when.timestamp() if when else 0.0, dispatch_id)

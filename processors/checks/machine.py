"""The check-run machine: one per dispatch, its rules written as a table (no I/O).

GitHub's rules for a check run, as hookstream keeps them (DESIGN.md §7):

- ``queued`` when the dispatch is emitted, ``in_progress`` at the first runner report
  that says so, ``completed`` with one of GitHub's conclusions; ``completed`` is terminal.
- No order is assumed. Inputs that come before their dispatch (a fast runner, a replay
  reading one topic ahead of another) are held in a ``new`` machine and applied when the
  dispatch arrives. Duplicates, regressions and reports after ``completed`` change
  nothing; they come back as a :class:`Refusal` with the reason.
- A re-run is a new dispatch (and so a new check run): ``check_run.rerequested``,
  ``check_suite.rerequested`` and ``check_run.requested_action`` produce a
  :class:`Redispatch` whose id is UUIDv5(original dispatch id, delivery GUID).

:func:`apply` is the whole machine: ``apply(state, input) -> Step`` with the next state,
the transitions to record, the refusals, and the re-run dispatches to emit. What GitHub
must be told is not an effect of one input but a gap in the state — the status the
machine holds against the status GitHub confirmed — so :func:`sync_plan` derives it:
a crash between two calls leaves a gap that the next input for the dispatch closes.
:mod:`processors.checks.github` performs the calls.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from schemas.checks import CheckTransition
from schemas.dispatch import DeliveryRef, DispatchRequest
from schemas.run_status import RunStatusRecord


class Status(StrEnum):
    NEW = "new"  # inputs came before the dispatch: nothing exists on GitHub yet
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


# --- inputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dispatched:
    """The dispatch request was emitted (read back from ``hookstream.dispatch``)."""

    request: DispatchRequest


@dataclass(frozen=True)
class Reported:
    """A runner's report (``hookstream.run-status``)."""

    report: RunStatusRecord


@dataclass(frozen=True)
class GitHubSaw:
    """A ``check_run`` delivery about this check run: GitHub's own view of it."""

    action: str  # "created" or "completed"
    check_run_id: int
    conclusion: str | None
    delivery_id: str
    at: datetime


@dataclass(frozen=True)
class RerunRequested:
    """Someone asked GitHub to run this check again, or clicked one of its actions."""

    delivery: DeliveryRef
    at: datetime
    action: str | None = None  # the requested action's identifier


Input = Dispatched | Reported | GitHubSaw | RerunRequested


# --- effects ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateCheckRun:
    """Create the check run on GitHub (``queued``); look first if one may exist."""

    may_exist: bool


@dataclass(frozen=True)
class UpdateCheckRun:
    """Bring the check run on GitHub to this report's status (and conclusion, output)."""

    report: RunStatusRecord


@dataclass(frozen=True)
class Redispatch:
    """Emit this new dispatch request: a re-run of the workflow."""

    request: DispatchRequest


Effect = CreateCheckRun | UpdateCheckRun | Redispatch


@dataclass(frozen=True)
class Refusal:
    kind: str  # duplicate | regression | late | unknown: the metrics label
    reason: str


# --- state --------------------------------------------------------------------------------


class PendingRerun(BaseModel):
    model_config = ConfigDict(frozen=True)

    delivery: DeliveryRef
    at: datetime
    action: str | None = None


class CheckRun(BaseModel):
    """What the machine remembers of one dispatch's check run (a table value)."""

    model_config = ConfigDict(frozen=True)

    dispatch_id: str
    status: Status = Status.NEW
    conclusion: str | None = None
    report: RunStatusRecord | None = None  # the report behind the status: what to show
    check_run_id: int | None = None
    # A create may have reached GitHub: look it up by external_id before creating again.
    create_sent: bool = False
    synced: Status | None = None  # the status GitHub confirmed
    request: DispatchRequest | None = None
    # Held while NEW: the most advanced runner report, and the re-runs asked for.
    pending_report: RunStatusRecord | None = None
    pending_reruns: tuple[PendingRerun, ...] = ()
    reruns: tuple[str, ...] = ()  # delivery GUIDs whose re-run was dispatched

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_defaults=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> CheckRun:
        return cls.model_validate_json(raw)


# --- the table ----------------------------------------------------------------------------

RANK = {Status.QUEUED: 0, Status.IN_PROGRESS: 1, Status.COMPLETED: 2}


@dataclass(frozen=True)
class Go:
    """Move to ``to``."""

    to: Status


@dataclass(frozen=True)
class Hold:
    """Keep the input until the dispatch arrives."""


@dataclass(frozen=True)
class Learn:
    """Remember GitHub's id for the check run; the status does not change."""


@dataclass(frozen=True)
class Rerun:
    """Emit a re-run dispatch."""


@dataclass(frozen=True)
class Refuse:
    kind: str
    reason: str


Rule = Go | Hold | Learn | Rerun | Refuse

DISPATCHED, QUEUED, IN_PROGRESS, COMPLETED = "dispatched", "queued", "in_progress", "completed"
GH_CREATED, GH_COMPLETED, RERUN = "github:created", "github:completed", "rerun"
NONE_ = None  # no machine yet

_LATE = Refuse("late", "completed is terminal: the report came after the run completed")
_TWICE = Refuse("duplicate", "the dispatch was seen already")

TRANSITIONS: dict[tuple[Status | None, str], Rule] = {
    (NONE_, DISPATCHED): Go(Status.QUEUED),
    (NONE_, QUEUED): Hold(),
    (NONE_, IN_PROGRESS): Hold(),
    (NONE_, COMPLETED): Hold(),
    (NONE_, GH_CREATED): Learn(),
    (NONE_, GH_COMPLETED): Learn(),
    (NONE_, RERUN): Hold(),
    (Status.NEW, DISPATCHED): Go(Status.QUEUED),
    (Status.NEW, QUEUED): Hold(),
    (Status.NEW, IN_PROGRESS): Hold(),
    (Status.NEW, COMPLETED): Hold(),
    (Status.NEW, GH_CREATED): Learn(),
    (Status.NEW, GH_COMPLETED): Learn(),
    (Status.NEW, RERUN): Hold(),
    (Status.QUEUED, DISPATCHED): _TWICE,
    (Status.QUEUED, QUEUED): Refuse("duplicate", "already queued"),
    (Status.QUEUED, IN_PROGRESS): Go(Status.IN_PROGRESS),
    (Status.QUEUED, COMPLETED): Go(Status.COMPLETED),
    (Status.QUEUED, GH_CREATED): Learn(),
    (Status.QUEUED, GH_COMPLETED): Go(Status.COMPLETED),
    (Status.QUEUED, RERUN): Rerun(),
    (Status.IN_PROGRESS, DISPATCHED): _TWICE,
    (Status.IN_PROGRESS, QUEUED): Refuse("regression", "in_progress does not go back to queued"),
    (Status.IN_PROGRESS, IN_PROGRESS): Refuse("duplicate", "already in_progress"),
    (Status.IN_PROGRESS, COMPLETED): Go(Status.COMPLETED),
    (Status.IN_PROGRESS, GH_CREATED): Learn(),
    (Status.IN_PROGRESS, GH_COMPLETED): Go(Status.COMPLETED),
    (Status.IN_PROGRESS, RERUN): Rerun(),
    (Status.COMPLETED, DISPATCHED): _TWICE,
    (Status.COMPLETED, QUEUED): _LATE,
    (Status.COMPLETED, IN_PROGRESS): _LATE,
    (Status.COMPLETED, COMPLETED): _LATE,
    (Status.COMPLETED, GH_CREATED): Learn(),
    # GitHub telling us of our own completion: nothing to do.
    (Status.COMPLETED, GH_COMPLETED): Learn(),
    (Status.COMPLETED, RERUN): Rerun(),
}


def kind_of(event: Input) -> str:
    match event:
        case Dispatched():
            return DISPATCHED
        case Reported(report):
            return report.status
        case GitHubSaw(action=action):
            return GH_COMPLETED if action == "completed" else GH_CREATED
        case RerunRequested():
            return RERUN


# --- applying -----------------------------------------------------------------------------


@dataclass
class Step:
    state: CheckRun
    effects: list[Redispatch] = field(default_factory=list)
    transitions: list[CheckTransition] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)


def sync_plan(state: CheckRun) -> list[CreateCheckRun | UpdateCheckRun]:
    """The Checks API effects that bring GitHub to the machine's status."""
    if state.request is None:
        return []
    plan: list[CreateCheckRun | UpdateCheckRun] = []
    if state.check_run_id is None:
        plan.append(CreateCheckRun(may_exist=state.create_sent))
    if state.report is not None and state.synced != state.status:
        plan.append(UpdateCheckRun(state.report))
    return plan


def create_sent(state: CheckRun) -> CheckRun:
    """Recorded (and made durable) before GitHub is asked to create the check run."""
    return state.model_copy(update={"create_sent": True})


def created(state: CheckRun, check_run_id: int) -> CheckRun:
    confirmed = state.synced if state.synced is not None else Status.QUEUED
    return state.model_copy(update={"check_run_id": check_run_id, "synced": confirmed})


def synced(state: CheckRun, status: str) -> CheckRun:
    return state.model_copy(update={"synced": Status(status)})


def rerun_id(dispatch_id: str, delivery_id: str) -> str:
    """The id of a re-run: the same original and the same delivery, the same id."""
    return str(uuid.uuid5(uuid.UUID(dispatch_id), delivery_id))


def apply(state: CheckRun | None, event: Input, dispatch_id: str) -> Step:
    """Fold one input into the machine of ``dispatch_id``."""
    current = state or CheckRun(dispatch_id=dispatch_id)
    step = Step(current)
    _apply(step, state.status if state else None, event)
    return step


def _apply(step: Step, status: Status | None, event: Input) -> None:
    rule = TRANSITIONS[(status, kind_of(event))]
    state = step.state
    match rule:
        case Refuse(kind, reason):
            step.refusals.append(Refusal(kind, reason))
        case Learn():
            assert isinstance(event, GitHubSaw)
            if state.check_run_id is None:
                step.state = created(state, event.check_run_id)
        case Hold():
            step.state = _hold(state, event)
            # Counted and logged like a refusal: nothing reaches GitHub until the dispatch.
            step.refusals.append(
                Refusal("unknown_dispatch", "no such dispatch yet: held until it arrives")
            )
        case Rerun():
            assert isinstance(event, RerunRequested)
            _rerun(step, event)
        case Go(to):
            _go(step, to, event)


def _hold(state: CheckRun, event: Input) -> CheckRun:
    if isinstance(event, Reported):
        held = state.pending_report
        if held is None or _later(event.report, held):
            return state.model_copy(update={"pending_report": event.report})
        return state
    assert isinstance(event, RerunRequested)
    pending = PendingRerun(delivery=event.delivery, at=event.at, action=event.action)
    if any(p.delivery.delivery_id == event.delivery.delivery_id for p in state.pending_reruns):
        return state
    reruns = sorted((*state.pending_reruns, pending), key=lambda p: p.delivery.delivery_id)
    return state.model_copy(update={"pending_reruns": tuple(reruns)})


def _later(report: RunStatusRecord, than: RunStatusRecord) -> bool:
    """The report that wins among those held: the most advanced, then the earliest."""
    rank, held_rank = RANK[Status(report.status)], RANK[Status(than.status)]
    if rank != held_rank:
        return rank > held_rank
    return (report.received_at, report.run_id) < (than.received_at, than.run_id)


def _go(step: Step, to: Status, event: Input) -> None:
    before = step.state
    update: dict[str, object] = {"status": to}
    if isinstance(event, Dispatched):
        update["request"] = event.request
    if isinstance(event, Reported):
        update["conclusion"] = event.report.conclusion
        update["report"] = event.report
    if isinstance(event, GitHubSaw):  # GitHub has it already: nothing to tell it
        update["conclusion"] = event.conclusion
        update["synced"] = to
        if before.check_run_id is None:
            update["check_run_id"] = event.check_run_id
    step.state = before.model_copy(update=update)
    step.transitions.append(_transition(step.state, before.status, event))
    if isinstance(event, Dispatched):
        _release_held(step)


def _release_held(step: Step) -> None:
    """Apply what came before the dispatch, now that it is here."""
    held, reruns = step.state.pending_report, step.state.pending_reruns
    step.state = step.state.model_copy(update={"pending_report": None, "pending_reruns": ()})
    if held is not None:
        _apply(step, step.state.status, Reported(held))
    for rerun in reruns:
        _apply(step, step.state.status, RerunRequested(rerun.delivery, rerun.at, rerun.action))


def _rerun(step: Step, event: RerunRequested) -> None:
    state, delivery, action = step.state, event.delivery, event.action
    if delivery.delivery_id in state.reruns:
        step.refusals.append(Refusal("duplicate", "this re-run was dispatched already"))
        return
    assert state.request is not None
    original = state.request
    variables = dict(original.variables)
    if action is not None:
        variables["ACTION"] = action
    request = original.model_copy(
        update={
            "dispatch_id": rerun_id(original.dispatch_id, delivery.delivery_id),
            "trigger": f"check_run.{'requested_action' if action else 'rerequested'}",
            "delivery": delivery,
            "variables": variables,
            "requested_at": event.at,
        }
    )
    step.state = state.model_copy(update={"reruns": (*state.reruns, delivery.delivery_id)})
    step.effects.append(Redispatch(request))


def _transition(state: CheckRun, before: Status, event: Input) -> CheckTransition:
    request = state.request
    assert request is not None
    cause, at = _cause(event)
    return CheckTransition(
        dispatch_id=state.dispatch_id,
        check_run_id=state.check_run_id,
        repository=request.repository,
        head_sha=request.sha,
        name=request.check_name,
        from_=None if before is Status.NEW else before.value,
        to=state.status.value,
        conclusion=state.conclusion,
        at=at,
        cause=cause,
    )


def _cause(event: Input) -> tuple[str, datetime | None]:
    match event:
        case Dispatched(request):
            return request.delivery.delivery_id, request.requested_at
        case Reported(report):
            return report.run_id, report.received_at
        case GitHubSaw(delivery_id=delivery_id, at=at):
            return delivery_id, at
        case RerunRequested(delivery=delivery, at=at):
            return delivery.delivery_id, at

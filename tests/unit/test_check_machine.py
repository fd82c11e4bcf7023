"""The check-run machine over every transition, in any order (DESIGN.md §7)."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.checks.machine import (
    RANK,
    TRANSITIONS,
    CheckRun,
    CreateCheckRun,
    Dispatched,
    Effect,
    GitHubSaw,
    Go,
    Input,
    Redispatch,
    Refusal,
    Reported,
    RerunRequested,
    Status,
    UpdateCheckRun,
    apply,
    create_sent,
    created,
    rerun_id,
    sync_plan,
    synced,
)
from schemas.checks import CheckTransition
from schemas.dispatch import Actor, DeliveryRef, DispatchRequest
from schemas.run_status import RunStatusRecord

DISPATCH = "6a1f2f0e-7d7b-5c55-8f33-6f0c1c1c0a01"
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def request(dispatch_id: str = DISPATCH) -> DispatchRequest:
    return DispatchRequest(
        dispatch_id=dispatch_id, workflow="deploy", trigger="github:acme/*:push",
        repository="acme/api", repository_id=1, sha="a" * 40, ref="refs/heads/main",
        actor=Actor(github_id=7, github_login="octocat"),
        delivery=DeliveryRef(hook_id="1", delivery_id="d-0", event="push"),
        variables={"REPO": "acme/api"}, targets=("ci",), installation_id=42,
        check_name="deploy", requested_at=T0,
    )  # fmt: skip


def report(status: str, conclusion: str | None = None, minute: int = 1) -> Reported:
    return Reported(
        RunStatusRecord(
            status=status, conclusion=conclusion, dispatch_id=DISPATCH,
            run_id=f"run-{status}-{minute}", received_at=T0 + timedelta(minutes=minute),
        )
    )  # fmt: skip


def github(action: str, conclusion: str | None = None) -> GitHubSaw:
    return GitHubSaw(action, 9001, conclusion, f"gh-{action}", T0 + timedelta(minutes=30))


def rerun(delivery: str = "rr-1", action: str | None = None) -> RerunRequested:
    ref = DeliveryRef(hook_id="1", delivery_id=delivery, event="check_run", action="rerequested")
    return RerunRequested(ref, T0 + timedelta(hours=1), action)


def github_does(state: CheckRun) -> tuple[CheckRun, list[Effect]]:
    """Carry out the sync plan as a GitHub that always answers would (id 9001)."""
    plan = sync_plan(state)
    for effect in plan:
        if isinstance(effect, CreateCheckRun):
            state = created(create_sent(state), 9001)
        else:
            state = synced(state, effect.report.status)
    return state, list(plan)


def run(*inputs: Input) -> tuple[CheckRun, list[Effect], list[CheckTransition], list[Refusal]]:
    """Each input, then what the worker tells GitHub, as the checks worker does."""
    state: CheckRun | None = None
    effects: list[Effect] = []
    transitions: list[CheckTransition] = []
    refusals: list[Refusal] = []
    for event in inputs:
        step = apply(state, event, DISPATCH)
        state, calls = github_does(step.state)
        effects += [*calls, *step.effects]
        transitions += step.transitions
        refusals += step.refusals
    assert state is not None
    return state, effects, transitions, refusals


def test_the_table_has_a_rule_for_every_state_and_input() -> None:
    states = [None, *Status]
    kinds = {kind for _, kind in TRANSITIONS}
    assert set(TRANSITIONS) == set(itertools.product(states, kinds))
    # completed is terminal: no rule leaves it.
    assert not [rule for (state, _), rule in TRANSITIONS.items()
                if state is Status.COMPLETED and isinstance(rule, Go)]  # fmt: skip
    # and no rule goes backwards.
    for (state, _), rule in TRANSITIONS.items():
        if isinstance(rule, Go) and state in RANK:
            assert RANK[rule.to] > RANK[state]


def test_queued_in_progress_completed_with_one_github_call_each() -> None:
    state, effects, transitions, refusals = run(
        Dispatched(request()), report("in_progress"), report("completed", "success", 5)
    )
    assert (state.status, state.conclusion, refusals) == (Status.COMPLETED, "success", [])
    assert [type(e) for e in effects] == [CreateCheckRun, UpdateCheckRun, UpdateCheckRun]
    assert [(t.from_, t.to) for t in transitions] == [
        (None, "queued"),
        ("queued", "in_progress"),
        ("in_progress", "completed"),
    ]
    last = transitions[-1]
    assert (last.cause, last.conclusion, last.name, last.head_sha) == (
        "run-completed-5",
        "success",
        "deploy",
        "a" * 40,
    )
    assert state.create_sent


def test_a_report_straight_to_completed_skips_in_progress() -> None:
    state, effects, _, _ = run(Dispatched(request()), report("completed", "failure"))
    assert (state.status, state.conclusion) == (Status.COMPLETED, "failure")
    assert isinstance(effects[1], UpdateCheckRun)


@pytest.mark.parametrize(
    ("inputs", "kind"),
    [
        ((report("queued"),), "duplicate"),
        ((report("in_progress"), report("in_progress", minute=2)), "duplicate"),
        ((report("in_progress"), report("queued", minute=2)), "regression"),
        ((report("completed", "success"), report("in_progress", minute=2)), "late"),
        ((report("completed", "success"), report("completed", "failure", 2)), "late"),
        ((Dispatched(request()),), "duplicate"),
    ],
)
def test_duplicates_regressions_and_late_reports_change_nothing(
    inputs: tuple[Input, ...], kind: str
) -> None:
    before, _, _, _ = run(Dispatched(request()), *inputs[:-1])
    step = apply(before, inputs[-1], DISPATCH)
    assert step.state == before
    assert (step.effects, step.transitions) == ([], [])
    assert [r.kind for r in step.refusals] == [kind]


def test_reports_before_the_dispatch_are_held_and_applied_when_it_arrives() -> None:
    held, effects, transitions, _ = run(report("in_progress"), report("completed", "success", 4))
    assert (held.status, effects, transitions) == (Status.NEW, [], [])
    assert held.pending_report is not None
    state, effects, transitions, _ = run(
        report("in_progress"), report("completed", "success", 4), Dispatched(request())
    )
    assert (state.status, state.conclusion, state.pending_report) == (
        Status.COMPLETED, "success", None
    )  # fmt: skip
    assert [type(e) for e in effects] == [CreateCheckRun, UpdateCheckRun]
    assert [t.to for t in transitions] == ["queued", "completed"]


def test_a_check_run_github_already_has_is_not_created_again() -> None:
    # GitHub's check_run.created came first (a crash after the create, or a replay).
    state, effects, _, _ = run(github("created"), Dispatched(request()))
    assert state.check_run_id == 9001
    assert effects == []
    assert state.status is Status.QUEUED


def test_github_completing_the_run_is_followed_and_our_own_echo_ignored() -> None:
    state, effects, transitions, _ = run(
        Dispatched(request()), github("created"), github("completed", "cancelled")
    )
    assert (state.status, state.conclusion, state.check_run_id) == (
        Status.COMPLETED, "cancelled", 9001
    )  # fmt: skip
    assert [type(e) for e in effects] == [CreateCheckRun]
    assert transitions[-1].cause == "gh-completed"
    echo, _, _, refused = run(
        Dispatched(request()), report("completed", "success"), github("completed", "success")
    )
    assert (echo.status, echo.conclusion, refused) == (Status.COMPLETED, "success", [])


def test_a_rerun_is_a_new_dispatch_with_a_derived_id() -> None:
    state, effects, _, _ = run(Dispatched(request()), report("completed", "failure"), rerun("rr-1"))
    [redispatch] = [e for e in effects if isinstance(e, Redispatch)]
    new = redispatch.request
    assert (
        new.dispatch_id
        == str(uuid.uuid5(uuid.UUID(DISPATCH), "rr-1"))
        == rerun_id(DISPATCH, "rr-1")
    )
    assert (new.workflow, new.sha, new.check_name, new.installation_id) == (
        "deploy", "a" * 40, "deploy", 42
    )  # fmt: skip
    assert new.delivery.delivery_id == "rr-1"
    assert "ACTION" not in new.variables
    assert state.reruns == ("rr-1",)
    again = apply(state, rerun("rr-1"), DISPATCH)
    assert again.effects == []
    assert [r.kind for r in again.refusals] == ["duplicate"]


def test_a_requested_action_dispatches_with_action_in_the_variables() -> None:
    _, effects, _, _ = run(Dispatched(request()), rerun("ra-1", action="deploy-eu"))
    [redispatch] = effects[1:]
    assert isinstance(redispatch, Redispatch)
    assert redispatch.request.variables == {"REPO": "acme/api", "ACTION": "deploy-eu"}
    assert redispatch.request.trigger == "check_run.requested_action"


def test_a_rerun_before_the_dispatch_is_dispatched_when_it_arrives() -> None:
    state, effects, _, _ = run(rerun("rr-9"), Dispatched(request()))
    assert [type(e) for e in effects] == [CreateCheckRun, Redispatch]
    assert state.reruns == ("rr-9",)


def test_the_state_survives_its_json() -> None:
    state, _, _, _ = run(rerun("rr-9"), report("in_progress"), Dispatched(request()))
    assert CheckRun.from_json(state.to_json()) == state


# Inputs of one dispatch that a real run can produce: one conclusion, GitHub echoing it.
@st.composite
def histories(draw: st.DrawFn) -> list[Input]:
    conclusion = draw(st.sampled_from(["success", "failure", "cancelled", "timed_out"]))
    pool: list[Input] = [Dispatched(request())]
    pool += [report("in_progress", minute=m) for m in range(draw(st.integers(0, 3)))]
    pool += [report("queued", minute=m) for m in range(draw(st.integers(0, 2)))]
    if draw(st.booleans()):
        pool.append(report("completed", conclusion, 10))
        if draw(st.booleans()):
            pool.append(github("completed", conclusion))
    if draw(st.booleans()):
        pool.append(github("created"))
    pool += [rerun(f"rr-{i}") for i in range(draw(st.integers(0, 2)))]
    pool += draw(st.lists(st.sampled_from(pool), max_size=3))  # redeliveries
    return draw(st.permutations(pool))


def essence(state: CheckRun) -> tuple[object, ...]:
    return (state.status, state.conclusion, state.check_run_id, sorted(state.reruns),
            state.pending_report, state.pending_reruns)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(histories(), st.randoms())
def test_any_order_of_the_same_inputs_ends_in_the_same_state(
    history: list[Input], random: Random
) -> None:
    first, effects, _, _ = run(*history)
    shuffled = list(history)
    random.shuffle(shuffled)
    second, other_effects, _, _ = run(*shuffled)
    assert essence(first) == essence(second)
    # And the re-runs dispatched are the same ones, once each.
    reruns = sorted(e.request.dispatch_id for e in effects if isinstance(e, Redispatch))
    assert reruns == sorted(
        e.request.dispatch_id for e in other_effects if isinstance(e, Redispatch)
    )
    assert len(reruns) == len(set(reruns))


def test_after_a_crash_the_next_input_finds_the_gap_and_looks_before_creating() -> None:
    # The worker recorded its intent to create, then died: was the create made or not?
    step = apply(None, Dispatched(request()), DISPATCH)
    intent = create_sent(step.state)
    again = apply(intent, Dispatched(request()), DISPATCH)  # the input is read again
    assert [r.kind for r in again.refusals] == ["duplicate"]
    assert sync_plan(again.state) == [CreateCheckRun(may_exist=True)]
    # Without the intent recorded, no lookup is needed: three calls for a whole run.
    assert sync_plan(step.state) == [CreateCheckRun(may_exist=False)]


def test_github_is_brought_to_the_latest_status_in_one_update() -> None:
    # GitHub fell behind (its calls failed): one PATCH to completed, not two.
    state = apply(None, Dispatched(request()), DISPATCH).state
    state = created(state, 9001)
    state = apply(state, report("in_progress"), DISPATCH).state
    state = apply(state, report("completed", "success", 3), DISPATCH).state
    [update] = sync_plan(state)
    assert isinstance(update, UpdateCheckRun)
    assert (update.report.status, update.report.conclusion) == ("completed", "success")
    assert sync_plan(synced(state, "completed")) == []

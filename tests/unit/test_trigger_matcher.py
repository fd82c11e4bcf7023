"""The trigger matcher over real corpus payloads (edited where a case needs it)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from processors.triggers.authorization import Authorizer, PlatformUser
from processors.triggers.matcher import Matcher, MatchResult
from processors.triggers.rules import TriggerFileError, parse_trigger_file
from schemas.dispatch import dispatch_id
from schemas.envelope import Envelope, RecordHeader
from tests.helpers import sample_payload


def payload_of(name: str) -> dict[str, Any]:
    return sample_payload(name)


def envelope(event: str, payload: dict[str, Any], delivery: str = "d-1") -> Envelope:
    headers = [
        (RecordHeader.EVENT, event.encode()),
        (RecordHeader.DELIVERY, delivery.encode()),
        (RecordHeader.HOOK_ID, b"77"),
        (RecordHeader.RECEIVED_AT, b"2026-11-26T04:00:00+00:00"),
    ]
    return Envelope.from_record(headers, orjson.dumps(payload))


def match(rules: str, event: str, payload: dict[str, Any], **kwargs: Any) -> MatchResult:
    return Matcher(parse_trigger_file(rules), **kwargs).match(envelope(event, payload))


def workflows(result: MatchResult) -> list[str]:
    return [d.workflow for d in result.dispatches]


def one_trigger(pattern: str, **filters: list[str]) -> str:
    lines = [f"      - event: {pattern}"]
    lines += [
        f"        {name}: {orjson.dumps(values).decode()}" for name, values in filters.items()
    ]
    return "workflows:\n  wf:\n    on:\n" + "\n".join(lines) + "\n"


# --- GitHub's own event names -----------------------------------------------------------


def test_pull_request_opened_makes_a_full_dispatch_request() -> None:
    payload = payload_of("pull_request.opened")
    pr = payload["pull_request"]
    result = match(one_trigger("github:Codertocat/Hello-World:pull_request.opened"),
                   "pull_request", payload)  # fmt: skip
    [request] = result.dispatches
    assert request.workflow == "wf"
    assert request.dispatch_id == dispatch_id("77", "d-1", "wf")
    assert request.repository == "Codertocat/Hello-World"
    assert request.repository_id == payload["repository"]["id"]
    assert request.ref == f"refs/pull/{pr['number']}/head"
    assert request.sha == pr["head"]["sha"]
    assert request.pr_number == pr["number"]
    assert request.actor.github_login == payload["sender"]["login"]
    assert request.actor.platform_user is None
    assert request.delivery.delivery_id == "d-1"
    assert request.delivery.action == "opened"
    assert request.variables == {
        "REPO": "Codertocat/Hello-World",
        "ORG": "Codertocat",
        "REF": request.ref,
        "SHA": request.sha,
        "PR": str(pr["number"]),
        "EVENT": "pull_request",
    }


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        ("github:Codertocat/Hello-World:pull_request", True),  # any action
        ("github:codertocat/hello-world:pull_request.opened", True),  # case-insensitive
        ("github:Code*/Hello-?orld:pull_request.opened", True),
        ("github:*/*:pull_request.closed", False),
        ("github:other/*:pull_request.opened", False),
        ("github:*/*:issues.opened", False),
    ],
)
def test_owner_repo_event_action_patterns(pattern: str, matches: bool) -> None:
    payload = payload_of("pull_request.opened")
    assert bool(match(one_trigger(pattern), "pull_request", payload).dispatches) is matches


# --- the normalized names ---------------------------------------------------------------


def test_pull_request_merged_is_a_closed_pull_request_with_merged_true() -> None:
    rules = (
        "workflows:\n  deploy:\n    on: ['github:*/*:pull_request.merged']\n"
        "  cleanup:\n    on: ['github:*/*:pull_request.closed']\n"
    )
    closed = payload_of("pull_request.closed")
    assert workflows(match(rules, "pull_request", closed)) == ["cleanup"]
    merged = copy.deepcopy(closed)
    merged["pull_request"].update(merged=True, merge_commit_sha="c0ffee" * 6 + "abcd")
    [deploy, cleanup] = sorted(
        match(rules, "pull_request", merged).dispatches, key=lambda d: d.workflow, reverse=True
    )
    assert (deploy.workflow, cleanup.workflow) == ("deploy", "cleanup")
    assert deploy.ref == "refs/heads/master"
    assert deploy.sha == "c0ffee" * 6 + "abcd"


@pytest.mark.parametrize(("ref_type", "name"), [("tag", "create.tag"), ("branch", "create.branch")])
def test_create_tag_and_branch(ref_type: str, name: str) -> None:
    payload = payload_of("create")
    payload.update(ref_type=ref_type, ref="v1.2.0" if ref_type == "tag" else "feature/x")
    rules = (
        "workflows:\n  tag:\n    on: ['github:*/*:create.tag']\n"
        "  branch:\n    on: ['github:*/*:create.branch']\n"
    )
    [request] = match(rules, "create", payload).dispatches
    assert request.workflow == name.split(".")[1]
    expected_ref = "refs/tags/v1.2.0" if ref_type == "tag" else "refs/heads/feature/x"
    assert request.ref == expected_ref


def test_push_to_a_branch_and_to_a_tag() -> None:
    rules = (
        "workflows:\n  build:\n    on: ['github:*/*:push.branch']\n"
        "  release:\n    on:\n      - event: github:*/*:push.tag\n        tags: ['v*']\n"
        "  any:\n    on: ['github:*/*:push']\n"
    )
    branch_push = payload_of("push#5")
    assert sorted(workflows(match(rules, "push", branch_push))) == ["any", "build"]
    tag_push = payload_of("push")
    assert workflows(match(rules, "push", tag_push)) == ["any"]  # simple-tag is not v*
    tag_push["ref"] = "refs/tags/v2.0.0"
    result = match(rules, "push", tag_push)
    assert sorted(workflows(result)) == ["any", "release"]
    release = next(d for d in result.dispatches if d.workflow == "release")
    assert (release.ref, release.sha) == ("refs/tags/v2.0.0", tag_push["after"])


def test_a_push_that_deletes_a_ref_triggers_nothing() -> None:
    deleted = payload_of("push#2")
    assert deleted["deleted"] is True
    assert match(one_trigger("github:*/*:push"), "push", deleted).dispatches == []


# --- filters ----------------------------------------------------------------------------


def test_branch_filter_on_push_and_on_pull_request_base() -> None:
    push = payload_of("push#5")  # refs/heads/master
    assert match(one_trigger("github:*/*:push", branches=["master"]), "push", push).dispatches
    assert not match(one_trigger("github:*/*:push", branches=["main"]), "push", push).dispatches
    pr = payload_of("pull_request.opened")  # base master, head changes
    trigger = "github:*/*:pull_request.opened"
    assert match(one_trigger(trigger, branches=["mas*"]), "pull_request", pr).dispatches
    assert not match(one_trigger(trigger, branches=["changes"]), "pull_request", pr).dispatches
    assert match(one_trigger(trigger, head_branches=["chan*"]), "pull_request", pr).dispatches
    assert not match(one_trigger(trigger, head_branches=["master"]), "pull_request", pr).dispatches


def test_paths_filter_reads_the_pushed_commits() -> None:
    push = payload_of("push#5")
    push["commits"][0].update(added=["docs/intro.md"], modified=["services/api/main.py"])
    assert match(one_trigger("github:*/*:push", paths=["services/api/*"]), "push", push).dispatches
    assert not match(
        one_trigger("github:*/*:push", paths=["services/web/*"]), "push", push
    ).dispatches
    # No commit lists a file: a paths filter cannot hold.
    push["commits"][0].update(added=[], modified=[], removed=[])
    assert not match(one_trigger("github:*/*:push", paths=["*"]), "push", push).dispatches


def test_labels_and_senders_filters() -> None:
    pr = payload_of("pull_request.closed")  # labelled "bug", sent by Codertocat
    t = "github:*/*:pull_request.closed"
    assert match(one_trigger(t, labels=["bug"]), "pull_request", pr).dispatches
    assert not match(one_trigger(t, labels=["deploy"]), "pull_request", pr).dispatches
    assert match(one_trigger(t, senders=["Coder*"]), "pull_request", pr).dispatches
    assert not match(one_trigger(t, senders=["dependabot[[]bot]"]), "pull_request", pr).dispatches
    assert not match(
        one_trigger(t, labels=["bug"], senders=["someone"]), "pull_request", pr
    ).dispatches


def test_tags_filter_on_create() -> None:
    create = payload_of("create")  # tag simple-tag
    assert match(
        one_trigger("github:*/*:create.tag", tags=["simple-*"]), "create", create
    ).dispatches
    assert not match(one_trigger("github:*/*:create.tag", tags=["v*"]), "create", create).dispatches


# --- ids --------------------------------------------------------------------------------


def test_dispatch_ids_are_deterministic_per_delivery_and_workflow() -> None:
    rules = parse_trigger_file(
        "workflows:\n  a:\n    on: ['github:*/*:push']\n  b:\n    on: ['github:*/*:push']\n"
    )
    payload = payload_of("push#5")
    first = Matcher(rules).match(envelope("push", payload, "guid-1")).dispatches
    again = Matcher(rules).match(envelope("push", payload, "guid-1")).dispatches
    other = Matcher(rules).match(envelope("push", payload, "guid-2")).dispatches
    assert [d.dispatch_id for d in first] == [d.dispatch_id for d in again]
    assert len({d.dispatch_id for d in first}) == 2  # one per workflow
    assert not {d.dispatch_id for d in first} & {d.dispatch_id for d in other}


def test_a_workflow_runs_once_per_delivery_even_if_two_triggers_match() -> None:
    rules = "workflows:\n  wf:\n    on: ['github:*/*:push', 'github:*/*:push.branch']\n"
    assert workflows(match(rules, "push", payload_of("push#5"))) == ["wf"]


# --- ChatOps ----------------------------------------------------------------------------

CHATOPS = """
workflows:
  deploy:
    commands:
      - command: deploy
        repositories: ["codertocat/*"]
        roles: [deployer]
  lint:
    commands:
      - command: lint
        on: [issue]
"""


def comment(body: str, association: str = "OWNER",
            on_pull_request: bool = True, action: str = "created") -> dict[str, Any]:  # fmt: skip
    payload = payload_of("issue_comment.created")
    payload["action"] = action
    payload["comment"].update(body=body, author_association=association)
    if on_pull_request:
        payload["issue"]["pull_request"] = {"url": "https://api.github.com/x", "html_url": "x"}
    return payload


def test_command_by_an_allowed_association_dispatches_with_its_arguments() -> None:
    payload = comment("/deploy staging --fast\nplease")
    result = match(CHATOPS, "issue_comment", payload)
    [request] = result.dispatches
    number = payload["issue"]["number"]
    assert (request.workflow, request.trigger, request.pr_number) == ("deploy", "/deploy", number)
    assert request.ref == f"refs/pull/{number}/head"
    assert request.variables["ARGS"] == "staging --fast"
    assert (request.variables["ARG1"], request.variables["ARG2"]) == ("staging", "--fast")
    assert request.variables["PR"] == str(number)
    assert result.refusals == []


@pytest.mark.parametrize("association", ["OWNER", "MEMBER", "COLLABORATOR"])
def test_each_default_association_may_run_commands(association: str) -> None:
    payload = comment("/deploy", association)
    assert workflows(match(CHATOPS, "issue_comment", payload)) == ["deploy"]


@pytest.mark.parametrize("association", ["CONTRIBUTOR", "FIRST_TIME_CONTRIBUTOR", "NONE"])
def test_other_associations_are_refused(association: str) -> None:
    result = match(CHATOPS, "issue_comment", comment("/deploy", association))
    assert result.dispatches == []
    [refusal] = result.refusals
    assert refusal.command == "/deploy"
    assert association in refusal.reason


def test_a_linked_platform_user_with_the_role_is_allowed() -> None:
    payload = comment("/deploy prod", "CONTRIBUTOR")
    user_id = payload["comment"]["user"]["id"]

    class Directory:
        def linked(self, github_id: int) -> PlatformUser | None:
            return PlatformUser("ada", frozenset({"deployer"})) if github_id == user_id else None

    result = match(CHATOPS, "issue_comment", payload, authorizer=Authorizer(Directory()))
    [request] = result.dispatches
    assert request.actor.platform_user == "ada"
    assert request.actor.github_id == user_id

    class WithoutRole:
        def linked(self, github_id: int) -> PlatformUser | None:
            return PlatformUser("bob", frozenset({"viewer"}))

    refused = match(CHATOPS, "issue_comment", payload, authorizer=Authorizer(WithoutRole()))
    assert refused.dispatches == []
    assert "bob lacks" in refused.refusals[0].reason


def test_unknown_and_malformed_commands_are_refused() -> None:
    unknown = match(CHATOPS, "issue_comment", comment("/rollback now"))
    assert (unknown.dispatches, unknown.refusals[0].reason) == ([], "unknown command /rollback")
    for body in ("/ deploy", "/Deploy!", '/deploy "unterminated'):
        malformed = match(CHATOPS, "issue_comment", comment(body))
        assert malformed.dispatches == []
        assert malformed.refusals[0].reason == "malformed command", body
        assert malformed.refusals[0].command == body  # as written: one slash, not two
    assert unknown.refusals[0].command == "/rollback"


def test_comments_that_are_not_commands_or_not_new_do_nothing() -> None:
    plain = match(CHATOPS, "issue_comment", comment("looks good, deploy later"))
    assert (plain.dispatches, plain.refusals) == ([], [])
    edited = match(CHATOPS, "issue_comment", comment("/deploy", action="edited"))
    assert (edited.dispatches, edited.refusals) == ([], [])


def test_command_scope_by_issue_or_pull_request_and_repository() -> None:
    on_issue = comment("/lint", on_pull_request=False)
    assert workflows(match(CHATOPS, "issue_comment", on_issue)) == ["lint"]
    on_pr = comment("/lint")
    assert match(CHATOPS, "issue_comment", on_pr).refusals[0].reason == "unknown command /lint"
    elsewhere = comment("/deploy")
    elsewhere["repository"]["full_name"] = "someone/else"
    assert match(CHATOPS, "issue_comment", elsewhere).dispatches == []


def test_requests_name_their_check_run_and_carry_the_installation() -> None:
    rules = (
        "workflows:\n"
        "  plain:\n    on: ['github:*/*:push']\n"
        "  named:\n    on: ['github:*/*:push']\n    check: {name: 'CI / build'}\n"
        "  quiet:\n    on: ['github:*/*:push']\n    check: false\n"
    )
    payload = payload_of("push#5")
    payload["installation"] = {"id": 957387}
    result = match(rules, "push", payload)
    names = {r.workflow: (r.check_name, r.installation_id) for r in result.dispatches}
    assert names == {
        "plain": ("plain", 957387), "named": ("CI / build", 957387), "quiet": (None, 957387)
    }  # fmt: skip


@pytest.mark.parametrize(
    "check",
    [
        "{actions: [{label: a, description: b}]}",  # no identifier
        "{actions: [{label: a, description: b, identifier: c, extra: 1}]}",
        "{name: ''}",
        "maybe",
    ],
)
def test_a_bad_check_setting_is_refused(check: str) -> None:
    with pytest.raises(TriggerFileError, match="check"):
        parse_trigger_file(f"workflows:\n  w:\n    on: ['github:*/*:push']\n    check: {check}\n")

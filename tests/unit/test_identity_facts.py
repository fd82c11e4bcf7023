"""The identity facts one delivery teaches (DESIGN.md §8), read from real payloads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from deploy.corpus import Example
from processors.identity.facts import EVENT_ID_MAX, Fact, learned_facts
from schemas.envelope import Envelope, RecordHeader
from schemas.identity import (
    IDENTITY_EVENT,
    AccountSeen,
    EmailSeen,
    EmailVia,
    MembershipSeen,
)
from tests.helpers import sample, sample_names, sample_payload

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
CODERTOCAT = 21031067
HACKTOCAT = 39652351
NOREPLY = "21031067+codertocat@users.noreply.github.com"


def envelope(event: str, payload: Any, received: datetime | None = T0) -> Envelope:
    headers = [(RecordHeader.EVENT, event.encode()), (RecordHeader.DELIVERY, DELIVERY.encode())]
    if received is not None:
        headers.append((RecordHeader.RECEIVED_AT, received.isoformat().encode()))
    return Envelope.from_record(headers, orjson.dumps(payload))


def facts_of(event: str, payload: dict[str, Any]) -> list[Fact]:
    return learned_facts(envelope(event, payload))


def accounts(facts: list[Fact]) -> dict[int, AccountSeen]:
    return {fact.github_user_id: fact for fact in facts if isinstance(fact, AccountSeen)}


def emails(facts: list[Fact]) -> list[EmailSeen]:
    return [fact for fact in facts if isinstance(fact, EmailSeen)]


def memberships(facts: list[Fact]) -> list[MembershipSeen]:
    return [fact for fact in facts if isinstance(fact, MembershipSeen)]


def assert_facts_fit(example: Example) -> list[Fact]:
    """Facts come without error, are valid events of the topic, and are unique per delivery."""
    facts = learned_facts(envelope(example.event, example.payload))
    for fact in facts:
        assert IDENTITY_EVENT.validate_json(fact.model_dump_json()) == fact, example.name
        assert fact.at == T0
        assert fact.event_id.startswith(f"{DELIVERY}:{fact.kind}:")
        assert len(fact.event_id) <= EVENT_ID_MAX
    assert len({fact.event_id for fact in facts}) == len(facts), example.name
    seen = [fact.github_user_id for fact in facts if isinstance(fact, AccountSeen)]
    assert len(set(seen)) == len(seen), example.name
    return facts


@pytest.mark.parametrize("name", sample_names())
def test_every_sample_yields_valid_unique_facts(name: str) -> None:
    facts = assert_facts_fit(sample(name))
    assert accounts(facts), "every sample has at least its sender"


# --- accounts ----------------------------------------------------------------------------


def test_every_user_in_a_pull_request_is_seen_once() -> None:
    # Codertocat is sender, author, assignee, head/base user and owner; octocat is asked
    # to review.
    facts = facts_of("pull_request", sample_payload("pull_request.closed"))
    assert accounts(facts) == {
        CODERTOCAT: AccountSeen(
            event_id=f"{DELIVERY}:account:{CODERTOCAT}",
            at=T0,
            github_user_id=CODERTOCAT,
            github_login="Codertocat",
        ),
        5346: AccountSeen(
            event_id=f"{DELIVERY}:account:5346", at=T0, github_user_id=5346, github_login="octocat"
        ),
    }
    assert len(facts) == 2


def test_a_review_teaches_its_reviewer_once_however_often_it_appears() -> None:
    payload = sample_payload("pull_request_review.submitted")
    payload["review"]["user"] = {**payload["review"]["user"], "id": 583231, "login": "octocat"}
    facts = facts_of("pull_request_review", payload)
    assert sorted(accounts(facts)) == [583231, CODERTOCAT]
    assert accounts(facts)[583231].github_login == "octocat"


def test_organizations_are_not_accounts() -> None:
    # The repository owner (33435682) and the workflow's repositories' owner (79927191) are
    # organizations, and `organization` itself has no type: only the sender is a person.
    facts = facts_of("workflow_run", sample_payload("workflow_run.completed"))
    assert list(accounts(facts)) == [54248166]
    assert accounts(facts)[54248166].github_login == "Codertocat"


def test_a_bot_by_type_is_a_bot() -> None:
    facts = facts_of("check_suite", sample_payload("check_suite.rerequested"))
    bot = accounts(facts)[49795351]
    assert bot.github_login == "octocoders-linter[bot]"
    assert bot.is_bot
    assert not accounts(facts)[CODERTOCAT].is_bot
    assert 38302899 not in accounts(facts)  # the App's owner, an organization


def test_a_bot_by_login_is_a_bot_whatever_its_type() -> None:
    payload = sample_payload("issues.opened")
    payload["sender"] = {**payload["sender"], "id": 41898282, "login": "github-actions[bot]"}
    assert accounts(facts_of("issues", payload))[41898282].is_bot


def test_user_like_objects_that_do_not_fit_are_skipped() -> None:
    payload = sample_payload("pull_request.opened")
    user = payload["sender"]
    payload["pull_request"]["assignees"] = [
        {**user, "id": "7"},
        {**user, "id": True},
        {**user, "id": 0},
        {**user, "id": 8, "login": ""},
        {**user, "id": 9, "login": None},
        {**user, "id": 10, "type": "Organization"},
        {**user, "id": 11, "type": "Mannequin"},
        {"id": 12, "login": "no-type"},
        "not an object",
        None,
    ]
    assert list(accounts(facts_of("pull_request", payload))) == [CODERTOCAT]


def test_the_current_login_wins_over_one_in_changes() -> None:
    payload = sample_payload("issues.opened")
    old = {**payload["sender"], "login": "Codertocat-old"}
    other = {**payload["sender"], "id": 583231, "login": "octocat"}
    payload = {"changes": {"user": {"from": old}, "owner": {"from": {"user": other}}}, **payload}
    seen = accounts(facts_of("issues", payload))
    assert seen[CODERTOCAT].github_login == "Codertocat"
    assert seen[583231].github_login == "octocat"  # accounts only in changes count too


# --- e-mails -----------------------------------------------------------------------------


def test_a_push_by_noreply_address_names_the_id() -> None:
    facts = facts_of("push", sample_payload("push#5"))
    assert emails(facts) == [
        EmailSeen(
            event_id=f"{DELIVERY}:email:{NOREPLY}:noreply",
            at=T0,
            email=NOREPLY,
            github_user_id=CODERTOCAT,
            via=EmailVia.NOREPLY,
        )
    ]


@pytest.mark.parametrize("name", ["push", "push#2", "push#5"])
def test_every_push_sample_ties_the_noreply_address_once(name: str) -> None:
    [email] = emails(facts_of("push", sample_payload(name)))
    assert (email.email, email.github_user_id, email.github_login) == (NOREPLY, CODERTOCAT, None)


def test_an_old_noreply_address_names_a_login_not_an_id() -> None:
    payload = sample_payload("push#5")
    for commit in (*payload["commits"], payload["head_commit"]):
        for role in ("author", "committer"):
            commit[role]["email"] = "Codertocat@users.noreply.github.com"
    payload["pusher"]["email"] = payload["repository"]["owner"]["email"] = "x@example.com"
    [email] = emails(facts_of("push", payload))
    assert email.email == "codertocat@users.noreply.github.com"
    assert (email.via, email.github_user_id, email.github_login) == (
        EmailVia.NOREPLY,
        None,
        "Codertocat",
    )


def test_a_push_username_resolves_to_the_id_of_the_sender() -> None:
    payload = sample_payload("push#5")
    payload["commits"][0]["author"]["email"] = " Codertocat@Example.COM "
    facts = facts_of("push", payload)
    tie = next(email for email in emails(facts) if email.via == EmailVia.PUSH_USERNAME)
    assert tie == EmailSeen(
        event_id=f"{DELIVERY}:email:codertocat@example.com:push_username",
        at=T0,
        email="codertocat@example.com",
        github_user_id=CODERTOCAT,
        via=EmailVia.PUSH_USERNAME,
    )


def test_a_push_username_nobody_in_the_payload_has_stays_a_login() -> None:
    payload = sample_payload("push#5")
    payload["head_commit"]["committer"] = {
        "name": "Monalisa Octocat",
        "email": "mona@example.com",
        "username": "monalisa",
    }
    [tie] = [email for email in emails(facts_of("push", payload)) if email.via != "noreply"]
    assert (tie.email, tie.github_user_id, tie.github_login) == (
        "mona@example.com",
        None,
        "monalisa",
    )


def test_a_display_name_never_ties_an_email() -> None:
    payload = sample_payload("push#5")
    for commit in (*payload["commits"], payload["head_commit"]):
        commit["author"] = {"name": "Codertocat", "email": "codertocat@example.com"}
        commit["committer"] = {"name": "octocat", "email": "octocat@example.com"}
    assert all(email.via == EmailVia.NOREPLY for email in emails(facts_of("push", payload)))


def test_only_a_push_ties_an_author_username() -> None:
    # check_suite.head_commit carries no username, but if it did it would not count:
    # DESIGN.md §8 trusts the username GitHub resolved at push time.
    payload = sample_payload("check_suite.rerequested")
    author = payload["check_suite"]["head_commit"]["author"]
    author.update(email="codertocat@example.com", username="Codertocat")
    assert [email.email for email in emails(facts_of("check_suite", payload))] == [NOREPLY]


def test_a_noreply_address_outside_a_push_names_the_id() -> None:
    [email] = emails(facts_of("check_suite", sample_payload("check_suite.rerequested")))
    assert (email.email, email.github_user_id, email.via) == (NOREPLY, CODERTOCAT, "noreply")


def test_a_long_address_still_makes_a_valid_event() -> None:
    payload = sample_payload("push#5")
    address = "a" * 180 + "@example.com"
    payload["commits"][0]["author"]["email"] = address
    [tie] = [email for email in emails(facts_of("push", payload)) if email.email == address]
    assert tie.github_user_id == CODERTOCAT
    assert len(tie.event_id) <= EVENT_ID_MAX
    assert IDENTITY_EVENT.validate_json(tie.model_dump_json()) == tie


# --- memberships -------------------------------------------------------------------------


def test_a_collaborator_added_is_a_repository_member() -> None:
    facts = facts_of("member", sample_payload("member.added"))
    assert memberships(facts) == [
        MembershipSeen(
            event_id=f"{DELIVERY}:membership:repo:Codertocat/Hello-World:{HACKTOCAT}",
            at=T0,
            github_user_id=HACKTOCAT,
            github_login="hacktocat",
            scope="repo:Codertocat/Hello-World",
            active=True,
        )
    ]
    assert sorted(accounts(facts)) == [CODERTOCAT, HACKTOCAT]


@pytest.mark.parametrize(("action", "active"), [("edited", True), ("removed", False)])
def test_a_collaborator_edited_or_removed(action: str, active: bool) -> None:
    payload = {**sample_payload("member.added"), "action": action}
    [membership] = memberships(facts_of("member", payload))
    assert (membership.github_user_id, membership.active) == (HACKTOCAT, active)


@pytest.mark.parametrize(("action", "active"), [("added", True), ("removed", False)])
def test_a_team_membership(action: str, active: bool) -> None:
    payload = {**sample_payload("membership.added"), "action": action}
    [membership] = memberships(facts_of("membership", payload))
    assert membership.scope == "team:Octocoders/github"
    assert (membership.github_user_id, membership.github_login) == (CODERTOCAT, "Codertocat")
    assert membership.active is active
    assert membership.event_id == f"{DELIVERY}:membership:team:Octocoders/github:{CODERTOCAT}"


def test_a_deleted_team_without_a_slug_teaches_no_membership() -> None:
    payload = {**sample_payload("membership.added"), "action": "removed"}
    payload["team"] = {"id": 3253328, "name": "github", "deleted": True}
    assert memberships(facts_of("membership", payload)) == []


@pytest.mark.parametrize(("action", "active"), [("member_added", True), ("member_removed", False)])
def test_an_organization_membership(action: str, active: bool) -> None:
    payload = {**sample_payload("organization.member_added"), "action": action}
    facts = facts_of("organization", payload)
    [membership] = memberships(facts)
    assert (membership.scope, membership.github_user_id, membership.github_login) == (
        "org:Octocoders",
        HACKTOCAT,
        "hacktocat",
    )
    assert membership.active is active
    assert 38302899 not in accounts(facts)  # the organization itself


def test_an_invitation_is_no_membership() -> None:
    payload = {**sample_payload("organization.member_added"), "action": "member_invited"}
    facts = facts_of("organization", payload)
    assert memberships(facts) == []
    assert sorted(accounts(facts)) == [CODERTOCAT, HACKTOCAT]


@pytest.mark.parametrize(
    ("event", "name", "action"),
    [
        ("organization", "organization.member_added", "renamed"),
        ("member", "member.added", "unknown"),
        # The same action under another event means nothing here.
        ("ping", "member.added", "added"),
    ],
)
def test_other_actions_teach_no_membership(event: str, name: str, action: str) -> None:
    payload = {**sample_payload(name), "action": action}
    assert memberships(facts_of(event, payload)) == []


def test_a_membership_without_a_fitting_member_is_skipped() -> None:
    payload = sample_payload("member.added")
    payload["member"] = {**payload["member"], "id": "39652351"}
    facts = facts_of("member", payload)
    assert memberships(facts) == []
    assert HACKTOCAT in accounts(facts)  # still the sender


# --- what raises -------------------------------------------------------------------------


def test_a_payload_that_is_no_object_raises_a_value_error() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        learned_facts(envelope("push", [1, 2]))


def test_a_record_without_a_receive_time_raises_a_value_error() -> None:
    with pytest.raises(ValueError, match="receive time"):
        learned_facts(envelope("push", sample_payload("push"), received=None))


def test_an_empty_object_teaches_nothing() -> None:
    assert learned_facts(envelope("push", {})) == []

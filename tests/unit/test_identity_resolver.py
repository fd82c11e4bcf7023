"""The identity resolver: links, unlinks, renames, learned versus explicit, conflicts, bots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.identity.resolver import IdentityResolver, resolve_all
from schemas.identity import (
    AccountSeen,
    EmailSeen,
    EmailVia,
    InputEvent,
    Link,
    MembershipSeen,
    Source,
    Unlink,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
_ids = count()


def t(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def eid() -> str:
    return f"e{next(_ids):06d}"


def seen(account: int, login: str, at: int, bot: bool = False) -> AccountSeen:
    return AccountSeen(
        event_id=eid(), at=t(at), github_user_id=account, github_login=login, is_bot=bot
    )


def link(
    person: str,
    at: int,
    account: int | None = None,
    login: str | None = None,
    email: str | None = None,
    role: str | None = None,
) -> Link:
    return Link(
        event_id=eid(),
        at=t(at),
        platform_user=person,
        github_user_id=account,
        github_login=login,
        email=email,
        role=role,
        source=Source.API,
    )


def unlink(person: str, account: int, at: int) -> Unlink:
    return Unlink(
        event_id=eid(), at=t(at), platform_user=person, github_user_id=account, source=Source.API
    )


def email(
    address: str, via: EmailVia, at: int, account: int | None = None, login: str | None = None
) -> EmailSeen:
    return EmailSeen(
        event_id=eid(), at=t(at), email=address, github_user_id=account, github_login=login, via=via
    )


def person_of(events: list[InputEvent], account: int) -> str | None:
    return resolve_all(events)[account].platform_user


def test_a_link_by_id_binds_and_an_unlink_releases() -> None:
    events: list[InputEvent] = [seen(11, "alice", 0), link("alice@corp", 5, account=11)]
    assert person_of(events, 11) == "alice@corp"
    events.append(unlink("alice@corp", 11, 10))
    answer = resolve_all(events)[11]
    assert (answer.platform_user, answer.github_login, answer.source) == (None, "alice", None)
    events.append(link("alice@corp", 20, account=11))
    assert person_of(events, 11) == "alice@corp"


def test_a_link_by_login_waits_for_the_login_to_be_seen() -> None:
    early = link("bob@corp", 0, login="Bob")
    assert resolve_all([early]) == {}
    later = seen(12, "bob", 30)
    assert person_of([early, later], 12) == "bob@corp"
    assert person_of([later, early], 12) == "bob@corp"


def test_a_renamed_login_stays_with_its_person() -> None:
    events: list[InputEvent] = [
        seen(11, "alice", 0),
        link("alice@corp", 1, login="alice"),
        seen(11, "alice-renamed", 50),
    ]
    answer = resolve_all(events)[11]
    assert (answer.platform_user, answer.github_login) == ("alice@corp", "alice-renamed")


def test_a_login_taken_over_by_another_account_moves_its_login_claim() -> None:
    events: list[InputEvent] = [
        seen(12, "bob", 0),
        link("bob@corp", 1, login="bob"),
        seen(12, "bob-old", 10),
        seen(13, "bob", 20),
    ]
    mapping = resolve_all(events)
    assert (mapping[12].platform_user, mapping[13].platform_user) == (None, "bob@corp")


def test_an_unlink_by_id_ends_a_link_made_by_login() -> None:
    events: list[InputEvent] = [
        seen(12, "bob", 0),
        link("bob@corp", 1, login="bob"),
        unlink("bob@corp", 12, 5),
    ]
    assert person_of(events, 12) is None


def test_explicit_beats_learned_and_noreply_beats_push_username() -> None:
    events: list[InputEvent] = [
        seen(14, "dave", 0),
        link("dave@corp", 1, email="dave@corp.example"),
        link("other@corp", 1, email="d@home.example"),
        email("d@home.example", EmailVia.PUSH_USERNAME, 2, account=14),
        email("dave@corp.example", EmailVia.NOREPLY, 3, account=14),
    ]
    answer = resolve_all(events)[14]
    assert (answer.platform_user, answer.source) == ("dave@corp", "email:noreply")
    events.append(link("explicit@corp", 4, account=14))
    answer = resolve_all(events)[14]
    assert (answer.platform_user, answer.source) == ("explicit@corp", "explicit")


def test_an_email_of_a_login_not_yet_seen_applies_once_it_is() -> None:
    events: list[InputEvent] = [
        link("erin@corp", 0, email="erin@corp.example"),
        email("erin@corp.example", EmailVia.PUSH_USERNAME, 1, login="erin"),
    ]
    assert resolve_all(events) == {}
    events.append(seen(15, "erin", 2))
    answer = resolve_all(events)[15]
    assert (answer.platform_user, answer.source) == ("erin@corp", "email:push_username")


def test_an_email_shared_by_two_people_names_nobody() -> None:
    events: list[InputEvent] = [
        seen(16, "frank", 0),
        link("a@corp", 1, email="team@corp.example"),
        link("b@corp", 1, email="team@corp.example"),
        email("team@corp.example", EmailVia.NOREPLY, 2, account=16),
    ]
    assert person_of(events, 16) is None


def test_a_conflict_is_reported_and_the_later_link_wins() -> None:
    resolver = IdentityResolver()
    history: list[InputEvent] = [
        seen(11, "alice", 0),
        link("alice@corp", 1, account=11, role="deployer"),
        link("mallory@corp", 2, account=11),
    ]
    for event in history:
        resolver.apply(event)
    answer = resolver.resolve(11, version=7, at=t(2))
    assert answer.resolved.platform_user == "mallory@corp"
    assert answer.conflict is not None
    assert (answer.conflict.claimants, answer.conflict.winner, answer.conflict.version) == (
        ("alice@corp", "mallory@corp"),
        "mallory@corp",
        7,
    )
    resolver.apply(unlink("mallory@corp", 11, 3))
    answer = resolver.resolve(11)
    assert (answer.resolved.platform_user, answer.resolved.roles, answer.conflict) == (
        "alice@corp",
        ("deployer",),
        None,
    )


def test_bots_never_belong_to_a_person() -> None:
    events: list[InputEvent] = [
        seen(99, "dependabot[bot]", 0, bot=True),
        link("someone@corp", 1, account=99),
        seen(98, "helper", 0, bot=True),
        link("x@corp", 1, login="helper"),
    ]
    mapping = resolve_all(events)
    assert (mapping[99].platform_user, mapping[99].is_bot) == (None, True)
    assert (mapping[98].platform_user, mapping[98].is_bot) == (None, True)


def test_membership_facts_teach_the_login() -> None:
    fact = MembershipSeen(
        event_id=eid(),
        at=t(0),
        github_user_id=20,
        github_login="gina",
        scope="team:acme/platform",
        active=True,
    )
    assert resolve_all([fact, link("gina@corp", 1, login="gina")])[20].platform_user == "gina@corp"


def test_apply_names_the_accounts_whose_answer_may_change() -> None:
    resolver = IdentityResolver()
    assert resolver.apply(seen(12, "bob", 0)) == {12}
    assert resolver.apply(link("bob@corp", 1, login="bob")) == {12}
    assert resolver.apply(seen(13, "bob", 5)) == {12, 13}  # the login moved
    assert resolver.apply(link("bob@corp", 6, account=14)) == {13, 14}


# --- any order of the same inputs: the same mapping ------------------------------------------
ACCOUNTS = (1, 2, 3)
PEOPLE = ("p1", "p2")
LOGINS = ("ann", "ben", "cat")
EMAILS = ("x@corp.example", "y@corp.example")


@st.composite
def histories(draw: st.DrawFn) -> list[InputEvent]:
    events: list[InputEvent] = []
    for i in range(draw(st.integers(1, 14))):
        at = t(draw(st.integers(0, 5)))  # few distinct times: ties broken by event_id
        kind = draw(
            st.sampled_from(
                ["seen", "link_id", "link_login", "link_email", "unlink", "email_id", "email_login"]
            )
        )
        person, account = draw(st.sampled_from(PEOPLE)), draw(st.sampled_from(ACCOUNTS))
        login, address = draw(st.sampled_from(LOGINS)), draw(st.sampled_from(EMAILS))
        via = draw(st.sampled_from(list(EmailVia)))
        event_id = f"h{i:03d}"
        if kind == "seen":
            events.append(
                AccountSeen(
                    event_id=event_id,
                    at=at,
                    github_user_id=account,
                    github_login=login,
                    is_bot=draw(st.booleans()),
                )
            )
        elif kind.startswith("link"):
            target: dict[str, Any] = {"github_user_id": account}
            if kind == "link_login":
                target = {"github_login": login}
            elif kind == "link_email":
                target = {"email": address}
            events.append(
                Link(
                    event_id=event_id,
                    at=at,
                    platform_user=person,
                    source=Source.CSV,
                    role=draw(st.sampled_from([None, "deployer"])),
                    **target,
                )
            )
        elif kind == "unlink":
            events.append(
                Unlink(
                    event_id=event_id,
                    at=at,
                    platform_user=person,
                    github_user_id=account,
                    source=Source.API,
                )
            )
        else:
            ref = {"github_user_id": account} if kind == "email_id" else {"github_login": login}
            events.append(EmailSeen(event_id=event_id, at=at, email=address, via=via, **ref))
    return events


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_order_of_the_same_events_resolves_to_the_same_mapping(data: st.DataObject) -> None:
    events = data.draw(histories())
    shuffled = data.draw(st.permutations(events))
    assert resolve_all(shuffled) == resolve_all(events)


@settings(max_examples=300, deadline=None)
@given(histories())
def test_re_resolving_only_the_touched_accounts_keeps_the_mapping_current(
    events: list[InputEvent],
) -> None:
    # What the worker does: after each input, answer again only for the accounts it names.
    resolver, emitted = IdentityResolver(), {}
    for event in events:
        for account in resolver.apply(event):
            emitted[account] = resolver.resolve(account).resolved
    current = resolver.mapping()
    assert {a: r for a, r in emitted.items() if a in current} == current

"""The identity facts of every payload of the pinned corpus (``make test-data``).

The unit tier checks the same over ``tests/samples/``; this sweep widens it to all 329
examples of ``@octokit/webhooks-examples``.
"""

from __future__ import annotations

from deploy.corpus import Example
from schemas.identity import AccountSeen, EmailSeen, EmailVia, MembershipSeen
from tests.unit.test_identity_facts import assert_facts_fit


def test_every_example_yields_valid_unique_facts(examples: tuple[Example, ...]) -> None:
    for example in examples:
        assert_facts_fit(example)


def test_the_corpus_teaches_every_kind_of_fact(examples: tuple[Example, ...]) -> None:
    facts = [fact for example in examples for fact in assert_facts_fit(example)]
    seen = [f for f in facts if isinstance(f, AccountSeen)]
    assert {"renovate[bot]", "github-pages[bot]", "octocoders-linter[bot]"} <= {
        f.github_login for f in seen if f.is_bot
    }
    assert all(f.is_bot == f.github_login.endswith("[bot]") for f in seen)
    ties = {
        (f.email, f.github_user_id, f.github_login, f.via)
        for f in facts
        if isinstance(f, EmailSeen)
    }
    assert {
        ("21031067+codertocat@users.noreply.github.com", 21031067, None, EmailVia.NOREPLY),
        ("41898282+github-actions[bot]@users.noreply.github.com", 41898282, None, "noreply"),
        ("matfax@users.noreply.github.com", None, "matfax", EmailVia.NOREPLY),
    } <= ties
    scopes = {(f.scope, f.active) for f in facts if isinstance(f, MembershipSeen)}
    assert {
        ("repo:Codertocat/Hello-World", True),
        ("team:Octocoders/github", True),
        ("team:Octocoders/github", False),
        ("org:Octocoders", True),
    } <= scopes


def test_no_organization_is_ever_an_account(examples: tuple[Example, ...]) -> None:
    organizations = {
        example.payload["organization"]["id"]
        for example in examples
        if isinstance(example.payload.get("organization"), dict)
    }
    for example in examples:
        seen = {f.github_user_id for f in assert_facts_fit(example) if isinstance(f, AccountSeen)}
        assert not seen & organizations, example.name


def test_an_invitation_teaches_no_membership(examples: tuple[Example, ...]) -> None:
    [invited] = [example for example in examples if example.name == "organization.member_invited"]
    assert not [f for f in assert_facts_fit(invited) if isinstance(f, MembershipSeen)]

"""The identity facts one delivery teaches (DESIGN.md §8 "Learned facts"): a pure function.

- :class:`AccountSeen` for every GitHub user or bot object anywhere in the payload (an
  ``id``, a ``login`` and a ``type`` of ``User`` or ``Bot``; organizations are not people);
- :class:`EmailSeen` for every ``users.noreply.github.com`` address (it names its account
  wherever it appears), and for the authors and committers of a ``push`` whose ``username``
  GitHub resolved at push time;
- :class:`MembershipSeen` from ``member``, ``membership`` and ``organization`` deliveries.

Display names never identify anyone and are never read. User-like objects that do not fit
are skipped; only a delivery that is no JSON object, or has no receive time, raises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from schemas.envelope import Envelope
from schemas.identity import (
    NOREPLY,
    AccountSeen,
    EmailSeen,
    EmailVia,
    MembershipSeen,
    is_bot_login,
    normalize_email,
)

Fact = AccountSeen | EmailSeen | MembershipSeen

ACCOUNT_TYPES = frozenset({"User", "Bot"})
EVENT_ID_MAX = 200  # max_length of event_id in schemas.identity

# (event, action) -> whether the account holds the membership afterwards. Actions not
# listed (organization.member_invited, renamed, deleted...) teach no membership.
MEMBERSHIP_ACTIONS: dict[tuple[str, str], bool] = {
    ("member", "added"): True,
    ("member", "edited"): True,
    ("member", "removed"): False,
    ("membership", "added"): True,
    ("membership", "removed"): False,
    ("organization", "member_added"): True,
    ("organization", "member_removed"): False,
}


@dataclass(frozen=True)
class _Account:
    id: int
    login: str
    is_bot: bool


def learned_facts(envelope: Envelope) -> list[Fact]:
    """Every identity fact in one delivery: accounts first, then e-mails, then memberships.

    One fact per account, per e-mail and per membership scope: each ``event_id`` is unique.
    """
    at = envelope.received_at
    if at is None:
        raise ValueError("a delivery without a receive time (received-at header)")
    payload = envelope.payload
    accounts, noreply = _walk(payload)
    delivery = envelope.delivery_id
    facts: list[Fact] = [
        AccountSeen(
            event_id=_event_id(delivery, "account", str(account.id)),
            at=at,
            github_user_id=account.id,
            github_login=account.login,
            is_bot=account.is_bot,
        )
        for account in accounts.values()
    ]
    emails = noreply
    if envelope.event == "push":
        # A noreply address names its account: it wins over the author's username.
        emails = {**_push_usernames(payload, accounts), **noreply}
    facts.extend(
        EmailSeen(
            event_id=_event_id(delivery, "email", f"{email}:{via}"),
            at=at,
            email=email,
            github_user_id=user_id,
            github_login=login,
            via=via,
        )
        for email, (via, user_id, login) in emails.items()
    )
    membership = _membership(envelope.event, payload)
    if membership is not None:
        scope, account, active = membership
        facts.append(
            MembershipSeen(
                event_id=_event_id(delivery, "membership", f"{scope}:{account.id}"),
                at=at,
                github_user_id=account.id,
                github_login=account.login,
                scope=scope,
                active=active,
            )
        )
    return facts


_EmailTie = tuple[EmailVia, int | None, str | None]


def _walk(payload: dict[str, Any]) -> tuple[dict[int, _Account], dict[str, _EmailTie]]:
    """Every account and every noreply address in the payload, in document order.

    ``changes`` holds previous values: it is walked last, so an account's current login
    wins over an old one when both are in the delivery. The walk runs on every delivery:
    a stack rather than recursion (no depth limit), exact type checks (orjson makes plain
    dicts and lists, and ``type() is`` is the cheap test).
    """
    accounts: dict[int, _Account] = {}
    noreply: dict[str, _EmailTie] = {}
    changes = payload.get("changes")
    stack: list[Any] = [changes] if type(changes) is dict else []
    push = stack.append
    for key, value in reversed(payload.items()):
        if key != "changes" and (type(value) is dict or type(value) is list):
            push(value)
    while stack:
        node = stack.pop()
        if type(node) is dict:
            if node.get("type") in ACCOUNT_TYPES:
                account = _account(node)
                if account is not None and account.id not in accounts:
                    accounts[account.id] = account
            email = node.get("email")
            if type(email) is str:
                tie = _noreply_tie(email)
                if tie is not None:
                    noreply.setdefault(normalize_email(email), tie)
            values = node.values()
        else:
            values = node
        for value in reversed(values):
            if type(value) is dict or type(value) is list:
                push(value)
    return accounts, noreply


def _account(node: dict[str, Any]) -> _Account | None:
    kind = node.get("type")
    if kind not in ACCOUNT_TYPES:
        return None
    ident = node.get("id")
    login = node.get("login")
    if type(ident) is not int or ident < 1 or not isinstance(login, str) or not login:
        return None
    return _Account(ident, login, kind == "Bot" or is_bot_login(login))


def _noreply_tie(email: str) -> _EmailTie | None:
    match = NOREPLY.match(email.strip())
    if match is None:
        return None
    user_id, login = match.groups()
    if user_id is None:  # the old form, login@users.noreply.github.com
        return (EmailVia.NOREPLY, None, login)
    return (EmailVia.NOREPLY, int(user_id), None) if int(user_id) >= 1 else None


def _push_usernames(payload: dict[str, Any], accounts: dict[int, _Account]) -> dict[str, _EmailTie]:
    """Commit authors and committers whose ``username`` GitHub filled in at push time.

    The username is tied to an id through a user object of the same delivery (logins
    are case-insensitive); a username no object names stays a login to resolve later.
    """
    ids = {account.login.lower(): account.id for account in accounts.values()}
    commits = payload.get("commits")
    found: dict[str, _EmailTie] = {}
    for commit in [*(commits if isinstance(commits, list) else []), payload.get("head_commit")]:
        if not isinstance(commit, dict):
            continue
        for role in ("author", "committer"):
            person = commit.get(role)
            if not isinstance(person, dict):
                continue
            email, username = person.get("email"), person.get("username")
            if not isinstance(email, str) or "@" not in email:
                continue
            if not isinstance(username, str) or not username:
                continue
            user_id = ids.get(username.lower())
            tie = (EmailVia.PUSH_USERNAME, user_id, username if user_id is None else None)
            found.setdefault(normalize_email(email), tie)
    return found


def _event_id(delivery: str, kind: str, key: str) -> str:
    event_id = f"{delivery}:{kind}:{key}"
    if len(event_id) <= EVENT_ID_MAX:
        return event_id
    # A long but legal e-mail address or repository name must not send the delivery to
    # the dead letters: a digest of the key is as unique.
    return f"{delivery}:{kind}:sha256:{sha256(key.encode()).hexdigest()}"


def _membership(event: str, payload: dict[str, Any]) -> tuple[str, _Account, bool] | None:
    action = payload.get("action")
    active = MEMBERSHIP_ACTIONS.get((event, action)) if isinstance(action, str) else None
    if active is None:
        return None
    scope, member = _SCOPES[event](payload)
    account = _account(member) if isinstance(member, dict) else None
    if scope is None or account is None:
        return None
    return scope, account, active


def _string(part: Any, key: str) -> str | None:
    value = part.get(key) if isinstance(part, dict) else None
    return value if isinstance(value, str) and value else None


def _repository_scope(payload: dict[str, Any]) -> tuple[str | None, Any]:
    name = _string(payload.get("repository"), "full_name")
    return (f"repo:{name}" if name else None), payload.get("member")


def _team_scope(payload: dict[str, Any]) -> tuple[str | None, Any]:
    org = _string(payload.get("organization"), "login")
    team = _string(payload.get("team"), "slug")
    return (f"team:{org}/{team}" if org and team else None), payload.get("member")


def _organization_scope(payload: dict[str, Any]) -> tuple[str | None, Any]:
    org = _string(payload.get("organization"), "login")
    membership = payload.get("membership")
    user = membership.get("user") if isinstance(membership, dict) else None
    return (f"org:{org}" if org else None), user


# Each membership event: where its scope and its account are.
_SCOPES: dict[str, Callable[[dict[str, Any]], tuple[str | None, Any]]] = {
    "member": _repository_scope,
    "membership": _team_scope,
    "organization": _organization_scope,
}

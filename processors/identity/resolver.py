"""The identity resolver: identity inputs, in any order, to the person of each GitHub account.

Pure: state lives in plain mappings of JSON values (dicts in tests and in
``hookstream identities list``; Faust tables, each backed by a changelog, in the worker),
and every update assigns a new value, never mutates one in place, so a table sees it.

Why any order of the same inputs gives the same mapping: each fact is kept only if it is
newer, by ``(at, event_id)``, than the one it would replace, and bot flags only ever turn
on, so the state after a set of inputs does not depend on their order; the answer for an
account is computed from that state when asked.

Precedence (DESIGN.md §8): an explicit link (by id, or by a login, which names whoever
holds it now) decides. Several people holding explicit links to one account is a
conflict: the latest link wins and :class:`schemas.identity.Conflict` says so. With no
explicit link, an e-mail tied to the account decides if it matches exactly one person's
linked e-mail, an address from a noreply e-mail before one from a push ``username``.
Display names are never used. Bots belong to nobody.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.identity import (
    AccountSeen,
    Conflict,
    EmailSeen,
    EmailVia,
    InputEvent,
    Link,
    MembershipSeen,
    Resolved,
    Unlink,
    is_bot_login,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
VIA_ORDER = (EmailVia.NOREPLY, EmailVia.PUSH_USERNAME)  # strongest first
Json = dict[str, Any]
Stamp = list[Any]  # [microseconds since the epoch, event_id]: compared as a tuple


def stamp(at: datetime, event_id: str) -> Stamp:
    micros = (at.astimezone(UTC) - EPOCH) // timedelta(microseconds=1)
    return [micros, event_id]


def _newer(candidate: Stamp, current: Stamp | None) -> bool:
    return current is None or tuple(candidate) > tuple(current)


@dataclass
class ResolverState:
    """The resolver's tables; keys are strings so the same code runs on Faust tables.

    - ``accounts``: account id → ``{"login", "login_at", "bot", "emails": {email: via}}``
    - ``logins``: lower-cased login → ``{"id", "at"}`` (the latest holder of the login)
    - ``account_logins``: account id → sorted lower-cased logins it was ever seen with
    - ``login_emails``: lower-cased login → ``{email: via}`` (e-mails of a login not yet
      seen with an id)
    - ``claims``: platform user → ``{ref: {"at", "linked", "role"}}``, the latest claim per
      ref, where a ref is ``id:N``, ``login:name`` or ``email:address``
    - ``claimants``: ref → sorted list of the platform users who ever claimed it
    - ``email_accounts``: e-mail → sorted list of account ids it was tied to
    """

    accounts: MutableMapping[str, Json] = field(default_factory=dict)
    logins: MutableMapping[str, Json] = field(default_factory=dict)
    account_logins: MutableMapping[str, list[str]] = field(default_factory=dict)
    login_emails: MutableMapping[str, Json] = field(default_factory=dict)
    claims: MutableMapping[str, Json] = field(default_factory=dict)
    claimants: MutableMapping[str, list[str]] = field(default_factory=dict)
    email_accounts: MutableMapping[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """The resolution of one account, and the conflict behind it if there is one."""

    resolved: Resolved
    conflict: Conflict | None


def _stronger(via: str, current: str | None) -> bool:
    return current is None or VIA_ORDER.index(EmailVia(via)) < VIA_ORDER.index(EmailVia(current))


def _add(values: list[Any] | None, value: Any) -> list[Any] | None:
    """The sorted list with ``value``, or None when it is there already (nothing to write)."""
    values = values or []
    return None if value in values else sorted([*values, value])


class IdentityResolver:
    def __init__(self, state: ResolverState | None = None) -> None:
        self.state = state or ResolverState()

    # --- inputs -------------------------------------------------------------------------
    def apply(self, event: InputEvent) -> set[int]:
        """Record one input; returns the accounts whose answer may have changed."""
        when = stamp(event.at, event.event_id)
        if isinstance(event, AccountSeen | MembershipSeen):
            bot = event.is_bot if isinstance(event, AccountSeen) else False
            return self._account(event.github_user_id, event.github_login, bot, when)
        if isinstance(event, EmailSeen):
            return self._email(event, when)
        if isinstance(event, Link):
            return self._link(event, when)
        return self._unlink(event, when)

    def _account(self, account: int, login: str, bot: bool, when: Stamp) -> set[int]:
        touched = {account}
        current = self.state.accounts.get(str(account)) or {"emails": {}}
        updated = dict(current)
        if _newer(when, current.get("login_at")):
            updated["login"], updated["login_at"] = login, when
        updated["bot"] = bool(current.get("bot")) or bot or is_bot_login(login)
        if updated != current:
            self.state.accounts[str(account)] = updated
        key = login.lower()
        held = _add(self.state.account_logins.get(str(account)), key)
        if held is not None:
            self.state.account_logins[str(account)] = held
        holder = self.state.logins.get(key)
        if holder is None or _newer(when, holder["at"]):
            if holder is not None and holder["id"] != account:
                touched.add(holder["id"])  # the login moved: claims by login move with it
            self.state.logins[key] = {"id": account, "at": when}
        for email in self.state.login_emails.get(key) or {}:
            self._index_email(email, account)
        return touched

    def _email(self, event: EmailSeen, when: Stamp) -> set[int]:
        email = event.email
        if event.github_user_id is not None:
            account = event.github_user_id
            current = self.state.accounts.get(str(account)) or {"emails": {}}
            emails = dict(current.get("emails") or {})
            if _stronger(event.via, emails.get(email)):
                emails[email] = event.via.value
                self.state.accounts[str(account)] = {**current, "emails": emails}
            self._index_email(email, account)
            return {account}
        if event.github_login is None:
            return set()
        key = event.github_login.lower()
        emails = dict(self.state.login_emails.get(key) or {})
        if _stronger(event.via, emails.get(email)):
            emails[email] = event.via.value
            self.state.login_emails[key] = emails
        holder = self.state.logins.get(key)
        if holder is not None:
            self._index_email(email, holder["id"])
            return {holder["id"]}
        return set()

    def _index_email(self, email: str, account: int) -> None:
        updated = _add(self.state.email_accounts.get(email), account)
        if updated is not None:
            self.state.email_accounts[email] = updated

    def _claim(self, person: str, ref: str, entry: Json) -> None:
        claims = dict(self.state.claims.get(person) or {})
        if _newer(entry["at"], (claims.get(ref) or {}).get("at")):
            claims[ref] = entry
            self.state.claims[person] = claims
        updated = _add(self.state.claimants.get(ref), person)
        if updated is not None:
            self.state.claimants[ref] = updated

    def _link(self, event: Link, when: Stamp) -> set[int]:
        entry = {"at": when, "linked": True, "role": event.role}
        if event.github_user_id is not None:
            self._claim(event.platform_user, f"id:{event.github_user_id}", entry)
        elif event.github_login is not None:
            self._claim(event.platform_user, f"login:{event.github_login.lower()}", entry)
        if event.email is not None:
            self._claim(event.platform_user, f"email:{event.email}", entry)
        return self.accounts_of(event.platform_user)

    def _unlink(self, event: Unlink, when: Stamp) -> set[int]:
        entry = {"at": when, "linked": False, "role": None}
        self._claim(event.platform_user, f"id:{event.github_user_id}", entry)
        return self.accounts_of(event.platform_user) | {event.github_user_id}

    # --- answers ------------------------------------------------------------------------
    def accounts_of(self, person: str) -> set[int]:
        """Every account a person's claims (active or not) name: their answers may move."""
        found: set[int] = set()
        for ref in self.state.claims.get(person) or {}:
            kind, _, value = ref.partition(":")
            if kind == "id":
                found.add(int(value))
            elif kind == "login" and (holder := self.state.logins.get(value)) is not None:
                found.add(holder["id"])
            elif kind == "email":
                found.update(self.state.email_accounts.get(value) or [])
        return found

    def accounts(self) -> list[int]:
        known = {int(account) for account in self.state.accounts}
        for refs in self.state.claims.values():
            known.update(int(ref[3:]) for ref in refs if ref.startswith("id:"))
        return sorted(known)

    def _held_logins(self, account: int) -> list[str]:
        """The logins this account holds now: renamed away from, but not taken over."""
        return [
            login
            for login in self.state.account_logins.get(str(account)) or []
            if (self.state.logins.get(login) or {}).get("id") == account
        ]

    def _refs(self, account: int) -> list[str]:
        return [f"id:{account}", *(f"login:{login}" for login in self._held_logins(account))]

    def _explicit(self, refs: list[str]) -> dict[str, Json]:
        """Each person's latest claim over these refs, for the people whose claim links."""
        active: dict[str, Json] = {}
        people = {person for ref in refs for person in self.state.claimants.get(ref) or []}
        for person in people:
            claims = self.state.claims.get(person) or {}
            latest = max(
                (claims[ref] for ref in refs if ref in claims), key=lambda c: tuple(c["at"])
            )
            if latest["linked"]:
                active[person] = latest
        return active

    def _emails(self, account: int) -> dict[str, str]:
        emails = dict((self.state.accounts.get(str(account)) or {}).get("emails") or {})
        for login in self._held_logins(account):
            for email, via in (self.state.login_emails.get(login) or {}).items():
                if _stronger(via, emails.get(email)):
                    emails[email] = via
        return emails

    def _by_email(self, account: int) -> tuple[str, str] | None:
        emails = self._emails(account)
        for via in VIA_ORDER:
            people: set[str] = set()
            for email, how in emails.items():
                if how != via:
                    continue
                for person in self.state.claimants.get(f"email:{email}") or []:
                    claim = (self.state.claims.get(person) or {}).get(f"email:{email}")
                    if claim is not None and claim["linked"]:
                        people.add(person)
            if len(people) == 1:
                return people.pop(), f"email:{via.value}"
            if people:
                return None  # one address, several people: no guess
        return None

    def roles_of(self, person: str) -> tuple[str, ...]:
        claims = self.state.claims.get(person) or {}
        return tuple(sorted({c["role"] for c in claims.values() if c["linked"] and c["role"]}))

    def resolve(self, account: int, version: int = 0, at: datetime = EPOCH) -> Answer:
        facts = self.state.accounts.get(str(account)) or {}
        login: str | None = facts.get("login")
        bot = bool(facts.get("bot")) or is_bot_login(login)
        person: str | None = None
        source: str | None = None
        conflict: Conflict | None = None
        if not bot:
            active = self._explicit(self._refs(account))
            if active:
                person = max(active, key=lambda p: (tuple(active[p]["at"]), p))
                source = "explicit"
                if len(active) > 1:
                    conflict = Conflict(
                        github_user_id=account, claimants=tuple(sorted(active)),
                        winner=person, version=version, at=at,
                    )  # fmt: skip
            elif (found := self._by_email(account)) is not None:
                person, source = found
        resolved = Resolved(
            github_user_id=account, github_login=login, platform_user=person,
            roles=self.roles_of(person) if person else (), source=source, is_bot=bot,
            version=version, at=at,
        )  # fmt: skip
        return Answer(resolved, conflict)

    def mapping(self) -> dict[int, Resolved]:
        """Every known account's answer (versions left at 0): what tests compare."""
        return {account: self.resolve(account).resolved for account in self.accounts()}


def resolve_all(events: Iterable[InputEvent]) -> dict[int, Resolved]:
    resolver = IdentityResolver()
    for event in events:
        resolver.apply(event)
    return resolver.mapping()

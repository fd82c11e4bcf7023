"""Identity events: the records of ``hookstream.identity`` (DESIGN.md §8).

Everything known about who is who is an event on one topic, never an update in place:

- **inputs**, written by the ingress (``POST``/``DELETE /v1/identities``), by
  ``hookstream identities import`` and by the identity worker's fact extraction:
  :class:`Link`, :class:`Unlink`, :class:`AccountSeen`, :class:`EmailSeen`,
  :class:`MembershipSeen`;
- **outputs** of the identity worker's resolver: :class:`Resolved` (the current person of
  one GitHub account, each time it changes) and :class:`Conflict` (one account claimed by
  several people).

The topic has one partition, so its offsets order every event; an output's ``version`` is
the offset of the input that produced it. Each input carries ``at`` (when it was said or
seen) and a unique ``event_id``: the resolver orders by ``(at, event_id)``, which is why
any order of the same inputs resolves to the same mapping.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

# GitHub logins: alphanumerics and hyphens, at most 39 (older accounts may have double or
# trailing hyphens, so those are accepted); bots carry a "[bot]" suffix.
LOGIN_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}(?:\[bot\])?$"
PLATFORM_USER_PATTERN = r"^[^\s/\x00-\x1f\x7f][^/\x00-\x1f\x7f]{0,199}$"
ROLE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
NOREPLY = re.compile(r"^(?:(\d+)\+)?([A-Za-z0-9-]+(?:\[bot\])?)@users\.noreply\.github\.com$", re.I)


def is_bot_login(login: str | None) -> bool:
    return bool(login) and str(login).endswith("[bot]")


def normalize_email(email: str) -> str:
    return email.strip().lower()


def noreply_id(email: str) -> int | None:
    """The account id a ``ID+login@users.noreply.github.com`` address names, if any."""
    match = NOREPLY.match(email.strip())
    return int(match.group(1)) if match and match.group(1) else None


class Source(StrEnum):
    """Where an input came from."""

    API = "api"
    CSV = "csv"
    DELIVERY = "delivery"


class EmailVia(StrEnum):
    """How an e-mail was tied to an account, strongest first (DESIGN.md §8 precedence)."""

    NOREPLY = "noreply"  # ID+login@users.noreply.github.com names the id
    PUSH_USERNAME = "push_username"  # a push commit's author username, resolved at push time


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(min_length=1, max_length=200)
    at: datetime


class Link(_Event):
    """A person claims a GitHub account (by id, else by login) and/or an e-mail."""

    kind: Literal["link"] = "link"
    platform_user: str = Field(pattern=PLATFORM_USER_PATTERN)
    github_user_id: int | None = Field(default=None, ge=1)
    github_login: str | None = Field(default=None, pattern=LOGIN_PATTERN)
    email: str | None = Field(default=None, max_length=320)
    role: str | None = Field(default=None, pattern=ROLE_PATTERN)
    source: Source

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.count("@") != 1 or value.startswith("@") or value.endswith("@"):
            raise ValueError("not an e-mail address")
        return normalize_email(value)

    @model_validator(mode="after")
    def _names_something(self) -> Link:
        if self.github_user_id is None and self.github_login is None and self.email is None:
            raise ValueError("a link needs github_user_id, github_login or email")
        return self


class Unlink(_Event):
    """A person no longer holds a GitHub account (history keeps the link before it)."""

    kind: Literal["unlink"] = "unlink"
    platform_user: str = Field(pattern=PLATFORM_USER_PATTERN)
    github_user_id: int = Field(ge=1)
    source: Source


class AccountSeen(_Event):
    """A delivery showed this account with this login (the latest wins) and type."""

    kind: Literal["account"] = "account"
    github_user_id: int = Field(ge=1)
    github_login: str
    is_bot: bool = False
    source: Source = Source.DELIVERY


class EmailSeen(_Event):
    """A delivery tied an e-mail address to an account (id, else a login to resolve)."""

    kind: Literal["email"] = "email"
    email: str
    github_user_id: int | None = None
    github_login: str | None = None
    via: EmailVia
    source: Source = Source.DELIVERY


class MembershipSeen(_Event):
    """Organization, team or repository membership from ``organization``, ``membership``
    and ``member`` deliveries; ``active`` false when the account was removed."""

    kind: Literal["membership"] = "membership"
    github_user_id: int = Field(ge=1)
    github_login: str
    scope: str  # "org:acme", "team:acme/platform", "repo:acme/api"
    active: bool
    source: Source = Source.DELIVERY


class Resolved(BaseModel):
    """The resolver's answer for one account, emitted each time it changes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["resolved"] = "resolved"
    github_user_id: int
    github_login: str | None
    platform_user: str | None
    roles: tuple[str, ...] = ()
    # "explicit" (a link), "email:noreply" / "email:push_username" (an e-mail that
    # matches exactly one person), or None (nobody).
    source: str | None
    is_bot: bool = False
    version: int = 0
    at: datetime


class Conflict(BaseModel):
    """Several people claim one account: the later explicit link wins, and this says so."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["conflict"] = "conflict"
    github_user_id: int
    claimants: tuple[str, ...]
    winner: str
    version: int = 0
    at: datetime


InputEvent = Link | Unlink | AccountSeen | EmailSeen | MembershipSeen
OutputEvent = Resolved | Conflict
AnyIdentityEvent = InputEvent | OutputEvent
INPUT_KINDS = frozenset({"link", "unlink", "account", "email", "membership"})
IDENTITY_EVENT: TypeAdapter[AnyIdentityEvent] = TypeAdapter(
    Annotated[AnyIdentityEvent, Field(discriminator="kind")]
)


def parse_identity_event(raw: bytes) -> AnyIdentityEvent:
    return IDENTITY_EVENT.validate_json(raw)


def record_key(event: AnyIdentityEvent) -> bytes:
    """The Kafka key: the account when there is one, else the person (one partition anyway)."""
    account = getattr(event, "github_user_id", None)
    if account is not None:
        return str(account).encode()
    return str(getattr(event, "platform_user", None) or getattr(event, "email", "")).encode()

"""Rows of the ``identities`` table from ``hookstream.identity`` records: its history.

Every record becomes a row, inputs and answers alike, so the table is the history of who
was linked to what and why; the views read the answers (``identity_current``) and the
memberships (``identity_memberships``). A row's identity is (kind, account, event id):
an answer's event id is its account and version, so reading the topic twice, or a
replayed identity worker writing the same answers again, collapses to one row.
"""

from __future__ import annotations

from typing import Any

from schemas.identity import (
    AccountSeen,
    AnyIdentityEvent,
    Conflict,
    EmailSeen,
    Link,
    MembershipSeen,
    Resolved,
    Unlink,
)

TABLE = "identities"
EMPTY: dict[str, Any] = {
    "github_user_id": 0, "github_login": "", "platform_user": "", "email": "", "role": "",
    "roles": [], "source": "", "via": "", "is_bot": 0, "scope": "", "active": 0,
    "claimants": [],
}  # fmt: skip


def identity_row(event: AnyIdentityEvent, offset: int) -> dict[str, Any]:
    """The row of one record; ``offset`` is its offset on the (one-partition) topic."""
    row = EMPTY | {"kind": event.kind, "at": event.at, "version": offset}
    if isinstance(event, Resolved | Conflict):
        row |= {"event_id": f"{event.github_user_id}@{event.version}", "version": event.version}
    else:
        row["event_id"] = event.event_id
    if isinstance(event, Resolved):
        row |= {
            "github_user_id": event.github_user_id, "github_login": event.github_login or "",
            "platform_user": event.platform_user or "", "roles": list(event.roles),
            "source": event.source or "", "is_bot": int(event.is_bot),
        }  # fmt: skip
    elif isinstance(event, Conflict):
        row |= {"github_user_id": event.github_user_id, "platform_user": event.winner,
                "claimants": list(event.claimants)}  # fmt: skip
    elif isinstance(event, Link):
        row |= {
            "github_user_id": event.github_user_id or 0, "github_login": event.github_login or "",
            "platform_user": event.platform_user, "email": event.email or "",
            "role": event.role or "", "source": event.source.value, "active": 1,
        }  # fmt: skip
    elif isinstance(event, Unlink):
        row |= {"github_user_id": event.github_user_id, "platform_user": event.platform_user,
                "source": event.source.value}  # fmt: skip
    elif isinstance(event, AccountSeen):
        row |= {"github_user_id": event.github_user_id, "github_login": event.github_login,
                "is_bot": int(event.is_bot), "source": event.source.value}  # fmt: skip
    elif isinstance(event, EmailSeen):
        row |= {"github_user_id": event.github_user_id or 0,
                "github_login": event.github_login or "", "email": event.email,
                "via": event.via.value, "source": event.source.value}  # fmt: skip
    elif isinstance(event, MembershipSeen):
        row |= {"github_user_id": event.github_user_id, "github_login": event.github_login,
                "scope": event.scope, "active": int(event.active),
                "source": event.source.value}  # fmt: skip
    return row

"""Who may run a ChatOps command: the seam between triggers and identity.

The matcher asks an :class:`Authorizer`. Today the answer comes from GitHub's
``author_association`` on the comment; once the identity processor links GitHub users
to platform users, a :class:`PlatformDirectory` adds their roles to the decision
without the matcher changing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from processors.triggers.rules import CommandSpec


@dataclass(frozen=True)
class PlatformUser:
    name: str
    roles: frozenset[str] = field(default_factory=frozenset)


class PlatformDirectory(Protocol):
    """Looks up the platform user linked to a GitHub user id, if any."""

    def linked(self, github_id: int) -> PlatformUser | None: ...


class NoDirectory:
    """No identity links yet: every lookup misses."""

    def linked(self, github_id: int) -> PlatformUser | None:
        return None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    platform_user: str | None = None


class Authorizer:
    def __init__(self, directory: PlatformDirectory | None = None) -> None:
        self.directory = directory or NoDirectory()

    def platform_user(self, github_id: int | None) -> PlatformUser | None:
        return self.directory.linked(github_id) if github_id is not None else None

    def may_run(
        self, command: CommandSpec, github_id: int | None, association: str | None
    ) -> Decision:
        linked = self.platform_user(github_id)
        name = linked.name if linked else None
        if association in command.associations:
            return Decision(True, f"author_association {association}", name)
        if linked and linked.roles & set(command.roles):
            roles = ", ".join(sorted(linked.roles & set(command.roles)))
            return Decision(True, f"platform user {linked.name} has role {roles}", name)
        return Decision(
            False,
            f"author_association {association or 'NONE'} may not run /{command.command}"
            + (f" and platform user {linked.name} lacks its roles" if linked else ""),
            name,
        )

"""Dispatch requests: what the triggers processor emits on ``hookstream.dispatch``.

A runner (or an HTTP target) receives one per workflow run to start. The id is derived
from the delivery and the workflow, so every redelivery or replay of the same delivery
yields the same id, and consumers can use it as an idempotency key.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import orjson
from pydantic import BaseModel, ConfigDict, Field

# Fixed namespace: dispatch ids must stay stable across versions and machines.
DISPATCH_NAMESPACE = uuid.UUID("6f1c1f0e-2b6a-5d3e-9a51-7c3f0b8e4d21")


def dispatch_id(hook_id: str | None, delivery_id: str, workflow: str) -> str:
    """UUIDv5 of (hook id, delivery GUID, workflow): the same inputs, the same id."""
    return str(uuid.uuid5(DISPATCH_NAMESPACE, f"{hook_id or ''}\x1f{delivery_id}\x1f{workflow}"))


class Actor(BaseModel):
    model_config = ConfigDict(frozen=True)

    github_id: int | None = None
    github_login: str | None = None
    platform_user: str | None = None


class DeliveryRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    hook_id: str | None
    delivery_id: str
    event: str
    action: str | None = None


class CheckAction(BaseModel):
    """A button on the check run; clicking it dispatches the workflow with ``ACTION``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str = Field(min_length=1, max_length=20)
    description: str = Field(min_length=1, max_length=40)
    identifier: str = Field(min_length=1, max_length=20)


class DispatchRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    dispatch_id: str
    workflow: str
    trigger: str = Field(description="The trigger pattern or /command that matched.")
    repository: str | None = None
    repository_id: int | None = None
    organization: str | None = None
    ref: str | None = None
    sha: str | None = None
    pr_number: int | None = None
    actor: Actor
    delivery: DeliveryRef
    variables: dict[str, str] = Field(default_factory=dict)
    targets: tuple[str, ...] = ()
    requested_at: datetime | None = None
    installation_id: int | None = Field(
        default=None, description="The GitHub App installation of the delivery, if any."
    )
    check_name: str | None = Field(
        default=None, description="The GitHub check run to show for it; None: no check run."
    )
    check_actions: tuple[CheckAction, ...] = ()

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, raw: bytes) -> DispatchRequest:
        return cls.model_validate_json(raw)

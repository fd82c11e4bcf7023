"""The envelope: what every processor reads from one ``github.events`` record.

A record's value is the exact body GitHub sent (JSON or ``application/x-www-form-urlencoded``
with a ``payload`` field) and its Kafka headers carry GitHub's delivery headers
(DESIGN.md §4). The envelope exposes the routing facts cheaply and parses the payload
only when it is first asked for, so a processor that filters on the event name never
pays for JSON it does not read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, TypeVar
from urllib.parse import parse_qs

import orjson
from pydantic import BaseModel

from schemas.errors import HookstreamError


class RecordHeader:
    """Kafka header names on ``github.events`` (lower-case, as HTTP/2 and Kafka tools show them)."""

    EVENT = "x-github-event"
    DELIVERY = "x-github-delivery"
    HOOK_ID = "x-github-hook-id"
    TARGET_TYPE = "x-github-hook-installation-target-type"
    TARGET_ID = "x-github-hook-installation-target-id"
    SIGNATURE = "x-hub-signature-256"
    CONTENT_TYPE = "content-type"
    RECEIVED_AT = "received-at"


FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
JSON_CONTENT_TYPE = "application/json"

M = TypeVar("M", bound=BaseModel)


class PayloadError(HookstreamError, ValueError):
    """The body is not a JSON object, or a form body has no ``payload`` field."""


def payload_bytes(body: bytes, content_type: str) -> bytes:
    """The JSON document inside a delivery body, whichever way GitHub encoded it."""
    if content_type.split(";", 1)[0].strip().lower() != FORM_CONTENT_TYPE:
        return body
    try:
        fields = parse_qs(body.decode("utf-8"), strict_parsing=False, max_num_fields=64)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"form body cannot be decoded: {exc}") from None
    values = fields.get("payload")
    if not values:
        raise PayloadError("form body has no 'payload' field")
    return values[0].encode("utf-8")


def parse_payload(body: bytes, content_type: str) -> dict[str, Any]:
    """Decode a delivery body into the payload object; raises :class:`PayloadError`."""
    raw = payload_bytes(body, content_type)
    if not raw:
        raise PayloadError("body is empty")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"payload is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PayloadError("payload must be a JSON object")
    return doc


def _id_of(obj: Any) -> int | None:
    if isinstance(obj, dict):
        value = obj.get("id")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def partition_key(payload: Mapping[str, Any]) -> bytes | None:
    """Kafka key of a delivery: repository id, else organization, installation, sender id.

    Keying by repository keeps one repository's events in order on one partition, which
    is what the state machines downstream want; the fallbacks spread org-level events.
    """
    for part in ("repository", "organization", "installation", "sender"):
        ident = _id_of(payload.get(part))
        if ident is not None:
            return str(ident).encode()
    return None


@dataclass(frozen=True)
class Sender:
    id: int | None
    login: str | None
    type: str | None

    @property
    def is_bot(self) -> bool:
        """DESIGN.md §6: type ``Bot`` or a login ending in ``[bot]``."""
        return self.type == "Bot" or (self.login or "").endswith("[bot]")


@dataclass
class Envelope:
    """One delivery as recorded in the event log."""

    event: str
    delivery_id: str
    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    hook_id: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    signature: str | None = None
    received_at: datetime | None = None
    key: bytes | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_record(
        cls,
        headers: Iterable[tuple[str, bytes]],
        value: bytes,
        *,
        key: bytes | None = None,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> Envelope:
        h = {name.lower(): raw.decode("utf-8", "replace") for name, raw in headers}
        received = h.get(RecordHeader.RECEIVED_AT)
        return cls(
            event=h.get(RecordHeader.EVENT, ""),
            delivery_id=h.get(RecordHeader.DELIVERY, ""),
            body=value,
            content_type=h.get(RecordHeader.CONTENT_TYPE, JSON_CONTENT_TYPE),
            hook_id=h.get(RecordHeader.HOOK_ID),
            target_type=h.get(RecordHeader.TARGET_TYPE),
            target_id=h.get(RecordHeader.TARGET_ID),
            signature=h.get(RecordHeader.SIGNATURE),
            received_at=datetime.fromisoformat(received) if received else None,
            key=key,
            topic=topic,
            partition=partition,
            offset=offset,
            headers=h,
        )

    @property
    def identity(self) -> tuple[str, str]:
        """(hook id, delivery GUID): what makes a delivery unique (DESIGN.md §5)."""
        return (self.hook_id or "", self.delivery_id)

    @cached_property
    def payload(self) -> dict[str, Any]:
        return parse_payload(self.body, self.content_type)

    @property
    def payload_json(self) -> bytes:
        """The JSON payload's bytes, whichever way GitHub encoded the body (no copy for
        JSON bodies)."""
        return payload_bytes(self.body, self.content_type)

    def parse(self, model: type[M]) -> M:
        """Validate the payload into one of the models of :mod:`schemas.github`."""
        return model.model_validate(self.payload)

    @property
    def action(self) -> str | None:
        action = self.payload.get("action")
        return action if isinstance(action, str) else None

    def _part(self, name: str) -> dict[str, Any]:
        part = self.payload.get(name)
        return part if isinstance(part, dict) else {}

    @property
    def repository_id(self) -> int | None:
        return _id_of(self.payload.get("repository"))

    @property
    def repository(self) -> str | None:
        """Full name ``owner/name``."""
        name = self._part("repository").get("full_name")
        return name if isinstance(name, str) else None

    @property
    def organization(self) -> str | None:
        login = self._part("organization").get("login")
        if isinstance(login, str):
            return login
        owner = self._part("repository").get("owner")
        if isinstance(owner, dict) and owner.get("type") == "Organization":
            return str(owner.get("login"))
        return None

    @property
    def installation_id(self) -> int | None:
        return _id_of(self.payload.get("installation"))

    @property
    def sender(self) -> Sender:
        s = self._part("sender")
        return Sender(id=_id_of(s), login=s.get("login"), type=s.get("type"))


def utc_now() -> datetime:
    return datetime.now(UTC)

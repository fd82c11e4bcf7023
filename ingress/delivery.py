"""Deciding what to do with one webhook request, without I/O.

``inspect_headers`` runs before the body is read and ``accept_body`` after it; each
either returns what the next step needs or raises :class:`Rejection` with the HTTP
status of DESIGN.md §5. The aiohttp handler only moves bytes between these and Kafka.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from schemas.envelope import (
    FORM_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    PayloadError,
    RecordHeader,
    parse_payload,
    partition_key,
)
from schemas.errors import HookstreamError
from schemas.signature import InvalidSignature, SignatureVerifier

ACCEPTED_CONTENT_TYPES = (JSON_CONTENT_TYPE, FORM_CONTENT_TYPE)

# GitHub's request header -> the Kafka header it is recorded under (when present).
_FORWARDED = (
    ("X-GitHub-Hook-ID", RecordHeader.HOOK_ID),
    ("X-GitHub-Hook-Installation-Target-Type", RecordHeader.TARGET_TYPE),
    ("X-GitHub-Hook-Installation-Target-ID", RecordHeader.TARGET_ID),
)


class Rejection(HookstreamError):
    """A request the ingress refuses; nothing of it is written to Kafka."""

    def __init__(
        self, status: int, reason: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason  # a stable short code, used as the metrics outcome
        self.message = message
        self.headers = headers


@dataclass(frozen=True, slots=True)
class DeliveryHeaders:
    event: str
    delivery_id: str
    content_type: str
    signature: str | None
    forwarded: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class EventRecord:
    """What goes onto ``github.events`` for one accepted delivery."""

    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]]
    event: str
    delivery_id: str
    action: str | None


def inspect_headers(
    headers: Mapping[str, str], content_length: int | None, max_body_bytes: int
) -> DeliveryHeaders:
    """Check what can be checked before reading the body. ``headers`` is case-insensitive."""
    if content_length is not None and content_length > max_body_bytes:
        raise Rejection(
            413,
            "too_large",
            f"body of {content_length} bytes exceeds the {max_body_bytes}-byte cap",
        )
    event = headers.get("X-GitHub-Event", "").strip()
    delivery_id = headers.get("X-GitHub-Delivery", "").strip()
    missing = [
        name
        for name, value in (("X-GitHub-Event", event), ("X-GitHub-Delivery", delivery_id))
        if not value
    ]
    if missing:
        raise Rejection(400, "missing_header", f"missing header: {', '.join(missing)}")
    content_type = headers.get("Content-Type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in ACCEPTED_CONTENT_TYPES:
        raise Rejection(
            415,
            "unsupported_media_type",
            f"content type must be {' or '.join(ACCEPTED_CONTENT_TYPES)}, "
            f"not {content_type or 'none'!r}",
        )
    forwarded = tuple(
        (kafka_name, value.encode())
        for http_name, kafka_name in _FORWARDED
        if (value := headers.get(http_name))
    )
    return DeliveryHeaders(
        event=event,
        delivery_id=delivery_id,
        content_type=media_type,
        signature=headers.get("X-Hub-Signature-256"),
        forwarded=forwarded,
    )


def accept_body(
    meta: DeliveryHeaders, body: bytes, verifier: SignatureVerifier, received_at: datetime
) -> EventRecord:
    """Verify and parse the body; the record keeps the body byte for byte."""
    try:
        verifier.verify(body, meta.signature)
    except InvalidSignature as exc:
        raise Rejection(401, "bad_signature", str(exc)) from None
    try:
        payload = parse_payload(body, meta.content_type)
    except PayloadError as exc:
        raise Rejection(400, "bad_payload", str(exc)) from None
    headers = [
        (RecordHeader.EVENT, meta.event.encode()),
        (RecordHeader.DELIVERY, meta.delivery_id.encode()),
        *meta.forwarded,
        (RecordHeader.SIGNATURE, (meta.signature or "").encode()),
        (RecordHeader.CONTENT_TYPE, meta.content_type.encode()),
        (RecordHeader.RECEIVED_AT, received_at.isoformat().encode()),
    ]
    action = payload.get("action")
    return EventRecord(
        value=body,
        key=partition_key(payload),
        headers=headers,
        event=meta.event,
        delivery_id=meta.delivery_id,
        action=action if isinstance(action, str) else None,
    )

"""The envelope reads every corpus example, JSON and form-encoded alike."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest

from deploy.corpus import Example
from schemas.envelope import Envelope, PayloadError, RecordHeader, parse_payload
from schemas.github import EVENT_MODELS, Event, parse_event
from tests.helpers import sample, sample_names

RECEIVED = datetime(2026, 11, 26, 4, 14, 1, 250000, tzinfo=UTC)


def record_headers(event: str, content_type: str) -> list[tuple[str, bytes]]:
    return [
        (RecordHeader.EVENT, event.encode()),
        (RecordHeader.DELIVERY, b"d-1"),
        (RecordHeader.HOOK_ID, b"42"),
        (RecordHeader.CONTENT_TYPE, content_type.encode()),
        (RecordHeader.RECEIVED_AT, RECEIVED.isoformat().encode()),
    ]


def envelopes(example: Example) -> list[Envelope]:
    json_body = example.body
    form_body = urlencode({"payload": json_body.decode()}).encode()
    return [
        Envelope.from_record(record_headers(example.event, "application/json"), json_body),
        Envelope.from_record(
            record_headers(example.event, "application/x-www-form-urlencoded"), form_body
        ),
    ]


def assert_parses_in_both_encodings(example: Example) -> None:
    for envelope in envelopes(example):
        assert envelope.payload == example.payload, example.name
        assert envelope.event == example.event
        assert envelope.action == example.action
        assert envelope.identity == ("42", "d-1")
        assert envelope.received_at == RECEIVED
        repo = example.payload.get("repository")
        if isinstance(repo, dict):
            assert envelope.repository == repo["full_name"]
            assert envelope.repository_id == repo["id"]
        sender = example.payload.get("sender")
        if isinstance(sender, dict):
            assert envelope.sender.login == sender["login"]
            assert envelope.sender.is_bot == (
                sender["type"] == "Bot" or sender["login"].endswith("[bot]")
            )
        installation = example.payload.get("installation")
        if isinstance(installation, dict):
            assert envelope.installation_id == installation["id"]


def assert_validates(example: Example) -> None:
    model = parse_event(example.event, example.payload)
    assert isinstance(model, EVENT_MODELS.get(example.event, Event))


@pytest.mark.parametrize("name", sample_names())
def test_every_sample_parses_in_both_encodings_and_validates(name: str) -> None:
    assert_parses_in_both_encodings(sample(name))
    assert_validates(sample(name))


def test_typed_access_to_a_merged_pull_request() -> None:
    example = sample("pull_request.closed")
    envelope = envelopes(example)[1]
    event = parse_event(envelope.event, envelope.payload)
    pr = event.pull_request  # type: ignore[attr-defined]
    assert pr.number == example.payload["pull_request"]["number"]
    assert pr.merged == example.payload["pull_request"]["merged"]


def test_unknown_fields_are_ignored() -> None:
    payload = {"action": "x", "sender": {"id": 1, "login": "a", "type": "User", "new": 1}}
    assert parse_event("brand_new_event", payload).sender is not None


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [
        (b"", "application/json", "empty"),
        (b"nope", "application/json", "not valid JSON"),
        (b'"a string"', "application/json", "JSON object"),
        (b"zen=1", "application/x-www-form-urlencoded", "no 'payload'"),
        (b"payload=\xff", "application/x-www-form-urlencoded", "cannot be decoded"),
    ],
)
def test_bad_bodies_raise_payload_error(body: bytes, content_type: str, fragment: str) -> None:
    with pytest.raises(PayloadError, match=fragment):
        parse_payload(body, content_type)

"""The ingress's pure decisions: every status of DESIGN.md §5 before any I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

import orjson
import pytest
from multidict import CIMultiDict

from deploy.corpus import Example
from ingress.delivery import Rejection, accept_body, inspect_headers
from schemas.envelope import Envelope, RecordHeader
from schemas.signature import SignatureVerifier, sign
from tests.helpers import sample, sample_names

SECRET = b"s3cret"
VERIFIER = SignatureVerifier([SECRET])
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CAP = 1024


def github_headers(body: bytes, **extra: str) -> CIMultiDict[str]:
    headers = CIMultiDict(
        {
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            "X-GitHub-Hook-ID": "292430182",
            "Content-Type": "application/json",
            "X-Hub-Signature-256": sign(body, SECRET),
        }
    )
    headers.update(extra)
    return headers


def rejection(headers: CIMultiDict[str], body: bytes) -> Rejection:
    def decide() -> None:
        accept_body(inspect_headers(headers, len(body), CAP), body, VERIFIER, NOW)

    with pytest.raises(Rejection) as info:
        decide()
    return info.value


def test_accepted_body_is_recorded_byte_for_byte_with_headers() -> None:
    body = b'{"action": "opened",  "repository": {"id": 7, "full_name": "o/r"}}'
    meta = inspect_headers(github_headers(body), len(body), CAP)
    record = accept_body(meta, body, VERIFIER, NOW)
    assert record.value is body
    assert record.key == b"7"
    assert record.action == "opened"
    headers = dict(record.headers)
    assert headers[RecordHeader.EVENT] == b"push"
    assert headers[RecordHeader.HOOK_ID] == b"292430182"
    assert headers[RecordHeader.SIGNATURE] == sign(body, SECRET).encode()
    assert headers[RecordHeader.CONTENT_TYPE] == b"application/json"
    assert datetime.fromisoformat(headers[RecordHeader.RECEIVED_AT].decode()) == NOW


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        ({"repository": {"id": 1}, "organization": {"id": 2}, "sender": {"id": 4}}, b"1"),
        ({"organization": {"id": 2}, "installation": {"id": 3}, "sender": {"id": 4}}, b"2"),
        ({"installation": {"id": 3}, "sender": {"id": 4}}, b"3"),
        ({"sender": {"id": 4}}, b"4"),
        ({"hook_id": 5}, None),
        ({"repository": {"id": "1"}, "sender": {"id": 4}}, b"4"),  # ids are integers
    ],
)
def test_partition_key_prefers_repository_then_org_installation_sender(
    payload: dict[str, object], key: bytes | None
) -> None:
    body = orjson.dumps(payload)
    record = accept_body(inspect_headers(github_headers(body), len(body), CAP), body, VERIFIER, NOW)
    assert record.key == key


def test_form_encoded_body_is_accepted_and_recorded_as_sent() -> None:
    body = urlencode({"payload": '{"zen": "Keep it logically awesome.", "sender": {"id": 9}}'})
    raw = body.encode()
    headers = github_headers(raw, **{"Content-Type": "application/x-www-form-urlencoded"})
    record = accept_body(inspect_headers(headers, len(raw), CAP), raw, VERIFIER, NOW)
    assert record.value == raw
    assert record.key == b"9"
    envelope = Envelope.from_record(record.headers, record.value)
    assert envelope.payload["zen"] == "Keep it logically awesome."


@pytest.mark.parametrize(
    ("drop", "status", "fragment"),
    [
        ("X-GitHub-Event", 400, "X-GitHub-Event"),
        ("X-GitHub-Delivery", 400, "X-GitHub-Delivery"),
        ("X-Hub-Signature-256", 401, "missing X-Hub-Signature-256"),
        ("Content-Type", 415, "content type"),
    ],
)
def test_missing_headers(drop: str, status: int, fragment: str) -> None:
    body = b"{}"
    headers = github_headers(body)
    del headers[drop]
    refused = rejection(headers, body)
    assert (refused.status, fragment in refused.message) == (status, True)


@pytest.mark.parametrize(
    ("headers_extra", "body", "status", "fragment"),
    [
        ({"X-Hub-Signature-256": sign(b"{}", b"wrong")}, b"{}", 401, "does not match"),
        ({"X-Hub-Signature-256": "sha1=" + "0" * 40}, b"{}", 401, "sha256="),
        ({"Content-Type": "text/plain"}, b"{}", 415, "text/plain"),
        ({"Content-Type": "application/xml"}, b"{}", 415, "application/json"),
        ({}, b"", 400, "empty"),
        ({}, b"{not json", 400, "not valid JSON"),
        ({}, b"[1, 2]", 400, "JSON object"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"other=1", 400, "payload"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"payload=%7B", 400, "JSON"),
    ],
)
def test_bad_requests(
    headers_extra: dict[str, str], body: bytes, status: int, fragment: str
) -> None:
    headers = github_headers(body)
    headers.update(headers_extra)
    refused = rejection(headers, body)
    assert refused.status == status
    assert fragment in refused.message


def test_content_type_parameters_are_allowed() -> None:
    body = b"{}"
    headers = github_headers(body, **{"Content-Type": "application/json; charset=utf-8"})
    assert inspect_headers(headers, 2, CAP).content_type == "application/json"


def test_declared_length_over_the_cap_is_refused_before_reading() -> None:
    refused = rejection(github_headers(b"{}"), b"x" * (CAP + 1))
    assert refused.status == 413
    assert str(CAP) in refused.message


def assert_accepted(example: Example) -> None:
    body = example.body
    headers = github_headers(body, **{"X-GitHub-Event": example.event})
    record = accept_body(inspect_headers(headers, len(body), 1 << 25), body, VERIFIER, NOW)
    assert record.event == example.event
    assert record.action == example.action
    assert record.value == body  # byte for byte


@pytest.mark.parametrize("name", sample_names())
def test_every_sample_is_accepted(name: str) -> None:
    assert_accepted(sample(name))

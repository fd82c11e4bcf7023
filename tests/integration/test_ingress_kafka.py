"""The ingress against the real broker: the whole corpus in, exactly the log out.

Every test reads the topic back from Kafka; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from deploy.corpus import Example
from deploy.send import installation_target, signed_delivery
from schemas.envelope import Envelope, RecordHeader
from schemas.logs import JsonFormatter
from schemas.signature import sign
from tests.helpers import (
    SECRET,
    RunningIngress,
    make_settings,
    read_topic,
    start_ingress,
    stop_ingress,
)

pytestmark = pytest.mark.integration


def expected_key(payload: dict[str, Any]) -> bytes | None:
    """DESIGN.md §4: repository id, else organization id, else installation id, else sender id."""
    for part in ("repository", "organization", "installation", "sender"):
        if isinstance(payload.get(part), dict) and isinstance(payload[part].get("id"), int):
            return str(payload[part]["id"]).encode()
    return None


async def post_all(ingress: RunningIngress, deliveries: list[Any]) -> list[int]:
    limit = asyncio.Semaphore(16)

    async def one(delivery: Any) -> int:
        async with limit:
            status, body = await ingress.post(delivery)
            if status == 202:
                assert body == {"delivery": delivery.delivery_id}
            return status

    return await asyncio.gather(*(one(d) for d in deliveries))


async def test_whole_corpus_lands_exactly_once_byte_identical(
    ingress: RunningIngress, examples: tuple[Example, ...]
) -> None:
    deliveries = [
        (example, signed_delivery(
            example.body, example.event, SECRET,
            installation_target=installation_target(example.payload),
        ))
        for example in examples
    ]  # fmt: skip
    # A sample is sent form-encoded, as GitHub does for hooks configured that way.
    deliveries += [
        (example, signed_delivery(example.body, example.event, SECRET, form=True))
        for example in examples[::7]
    ]
    statuses = await post_all(ingress, [d for _, d in deliveries])
    assert Counter(statuses) == {202: len(deliveries)}

    records = await read_topic(ingress.settings)
    by_delivery = Counter(dict(r.headers)[RecordHeader.DELIVERY].decode() for r in records)
    assert len(records) == len(deliveries)
    assert set(by_delivery.values()) == {1}
    index = {dict(r.headers)[RecordHeader.DELIVERY].decode(): r for r in records}
    for example, delivery in deliveries:
        record = index[delivery.delivery_id]
        headers = dict(record.headers)
        assert record.value == delivery.body, example.name
        assert record.key == expected_key(example.payload), example.name
        assert headers[RecordHeader.EVENT] == example.event.encode()
        assert headers[RecordHeader.HOOK_ID] == delivery.headers["X-GitHub-Hook-ID"].encode()
        assert headers[RecordHeader.SIGNATURE] == delivery.headers["X-Hub-Signature-256"].encode()
        assert headers[RecordHeader.CONTENT_TYPE] == delivery.headers["Content-Type"].encode()
        target = delivery.headers.get("X-GitHub-Hook-Installation-Target-ID")
        assert headers.get(RecordHeader.TARGET_ID) == (target.encode() if target else None)
        assert RecordHeader.RECEIVED_AT in headers
        # The log can be re-verified and re-parsed from what it holds.
        envelope = Envelope.from_record(record.headers, record.value, key=record.key)
        assert sign(envelope.body, SECRET) == envelope.signature
        assert envelope.payload == example.payload


async def test_ping_is_a_delivery_like_any_other(
    ingress: RunningIngress, examples: tuple[Example, ...]
) -> None:
    ping = next(e for e in examples if e.event == "ping")
    delivery = signed_delivery(ping.body, "ping", SECRET)
    assert (await ingress.post(delivery))[0] == 202
    [record] = await read_topic(ingress.settings)
    assert dict(record.headers)[RecordHeader.EVENT] == b"ping"


@pytest.fixture
async def small_cap_ingress(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[RunningIngress]:
    settings = make_settings(kafka_bootstrap, tmp_path, ingress_max_body_bytes=64 * 1024)
    server, running = await start_ingress(settings)
    await running.wait_ready()
    yield running
    await stop_ingress(server, running)


def _bad_cases(body: bytes) -> list[tuple[str, bytes, dict[str, str], int, str]]:
    good = signed_delivery(body, "push", SECRET).headers

    def edit(**changes: str | None) -> dict[str, str]:
        headers = dict(good)
        for name, value in changes.items():
            name = name.replace("_", "-")
            if value is None:
                headers.pop(name)
            else:
                headers[name] = value
        return headers

    big = b'{"pad": "' + b"x" * (70 * 1024) + b'"}'
    return [
        ("wrong secret", body,
         edit(**{"X-Hub-Signature-256": sign(body, b"wrong")}), 401, "does not match"),
        ("sha1 prefix", body,
         edit(**{"X-Hub-Signature-256": "sha1=" + "ab" * 20}), 401, "sha256="),
        ("no signature", body, edit(**{"X-Hub-Signature-256": None}), 401, "missing"),
        ("no event", body, edit(**{"X-GitHub-Event": None}), 400, "X-GitHub-Event"),
        ("no delivery", body, edit(**{"X-GitHub-Delivery": None}), 400, "X-GitHub-Delivery"),
        ("invalid JSON", b"{oops", edit(**{"X-Hub-Signature-256": sign(b"{oops", SECRET)}),
         400, "not valid JSON"),
        ("form without payload", b"zen=1",
         edit(**{"X-Hub-Signature-256": sign(b"zen=1", SECRET),
                 "Content-Type": "application/x-www-form-urlencoded"}), 400, "payload"),
        ("wrong content type", body, edit(**{"Content-Type": "text/plain"}), 415, "content type"),
        ("empty body", b"", edit(**{"X-Hub-Signature-256": sign(b"", SECRET)}), 400, "empty"),
        ("over the cap", big, edit(**{"X-Hub-Signature-256": sign(big, SECRET)}), 413, "cap"),
    ]  # fmt: skip


async def test_bad_requests_get_their_status_and_write_nothing(
    small_cap_ingress: RunningIngress, examples: tuple[Example, ...]
) -> None:
    body = next(e for e in examples if e.event == "push").body
    for name, payload, headers, status, fragment in _bad_cases(body):
        async with small_cap_ingress.session.post(
            small_cap_ingress.webhook_url, data=payload, headers=headers
        ) as response:
            answer = await response.json()
            assert response.status == status, name
            assert fragment in answer["message"], (name, answer)
            assert answer["error"]
    assert await read_topic(small_cap_ingress.settings) == []


async def test_chunked_body_over_the_cap_is_refused_without_a_length(
    small_cap_ingress: RunningIngress,
) -> None:
    chunk = b"x" * 8192

    async def stream() -> AsyncIterator[bytes]:
        yield b'{"pad": "'
        for _ in range(20):  # 160 KiB, well over the 64 KiB cap, with no Content-Length
            yield chunk
        yield b'"}'

    headers = signed_delivery(b"{}", "push", SECRET).headers
    async with small_cap_ingress.session.post(
        small_cap_ingress.webhook_url, data=stream(), headers=headers
    ) as response:
        assert response.status == 413
        assert "cap" in (await response.json())["message"]
    assert await read_topic(small_cap_ingress.settings) == []


async def test_secret_rotation_accepts_either_secret(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap, tmp_path, webhook_secrets="old-secret, new-secret")
    server, ingress = await start_ingress(settings)
    try:
        await ingress.wait_ready()
        old = signed_delivery(b'{"zen": "old"}', "ping", b"old-secret")
        new = signed_delivery(b'{"zen": "new"}', "ping", b"new-secret")
        other = signed_delivery(b'{"zen": "other"}', "ping", b"other-secret")
        assert (await ingress.post(old))[0] == 202
        assert (await ingress.post(new))[0] == 202
        assert (await ingress.post(other))[0] == 401
        records = await read_topic(settings)
        assert sorted(r.value for r in records) == [b'{"zen": "new"}', b'{"zen": "old"}']
    finally:
        await stop_ingress(server, ingress)


async def test_metrics_count_outcomes_and_latency(
    ingress: RunningIngress, examples: tuple[Example, ...]
) -> None:
    example = next(e for e in examples if e.name == "pull_request.opened")
    assert (await ingress.post(signed_delivery(example.body, example.event, SECRET)))[0] == 202
    assert (await ingress.post(signed_delivery(example.body, example.event, b"no")))[0] == 401
    status, text = await ingress.get("/metrics")
    assert status == 200
    lines = set(text.splitlines())
    assert (
        'hookstream_ingress_deliveries_total{event="pull_request",outcome="accepted"} 1.0' in lines
    )
    assert (
        'hookstream_ingress_deliveries_total{event="unverified",outcome="bad_signature"} 1.0'
        in lines
    )
    assert "hookstream_ingress_ack_seconds_count 1.0" in lines
    assert "hookstream_ingress_requests_in_flight 0.0" in lines
    assert (await ingress.get("/healthz"))[0] == 200


async def test_one_json_log_line_per_delivery_without_secret_or_payload(
    ingress: RunningIngress, examples: tuple[Example, ...], caplog: pytest.LogCaptureFixture
) -> None:
    example = next(e for e in examples if e.name == "issues.opened")
    delivery = signed_delivery(example.body, example.event, SECRET)
    with caplog.at_level(logging.INFO, logger="hookstream.ingress.delivery"):
        assert (await ingress.post(delivery))[0] == 202
    [record] = [r for r in caplog.records if r.name == "hookstream.ingress.delivery"]
    line = JsonFormatter().format(record)
    fields = orjson.loads(line)
    assert fields["delivery"] == delivery.delivery_id
    assert (fields["event"], fields["action"], fields["outcome"], fields["status"]) == (
        "issues",
        "opened",
        "accepted",
        202,
    )
    assert fields["latency_ms"] >= 0
    assert SECRET.decode() not in line
    assert example.payload["issue"]["title"] not in line
    assert delivery.headers["X-Hub-Signature-256"] not in line


async def test_redelivery_is_recorded_again_for_downstream_dedup(
    ingress: RunningIngress, examples: tuple[Example, ...]
) -> None:
    # The log keeps what GitHub sent, redeliveries included; processors collapse them by
    # (hook id, delivery GUID) (DESIGN.md §5).
    example = next(e for e in examples if e.event == "push")
    guid = str(uuid.uuid4())
    for _ in range(2):
        delivery = signed_delivery(example.body, "push", SECRET, delivery_id=guid)
        assert (await ingress.post(delivery))[0] == 202
    records = await read_topic(ingress.settings)
    assert [Envelope.from_record(r.headers, r.value).identity for r in records] == [
        ("1", guid),
        ("1", guid),
    ]
    assert len({r.partition for r in records}) == 1  # same key, same partition, in order


async def test_readyz_and_webhook_503_when_kafka_was_never_reachable(tmp_path: Path) -> None:
    with_nothing = make_settings("127.0.0.1:1", tmp_path, ingress_produce_timeout_s=1.0)
    server, ingress = await start_ingress(with_nothing)
    try:
        assert (await ingress.get("/readyz"))[0] == 503
        status, body = await ingress.post(signed_delivery(b"{}", "ping", SECRET))
        assert status == 503
        assert "unavailable" in body["message"]
    finally:
        await stop_ingress(server, ingress)


async def test_missing_secret_refuses_to_build_the_app(tmp_path: Path) -> None:
    from ingress.app import MissingSecret, create_app

    with pytest.raises(MissingSecret, match="HOOKSTREAM_WEBHOOK_SECRETS"):
        create_app(make_settings("127.0.0.1:1", tmp_path, webhook_secrets=""))


async def test_event_log_keeps_records_forever_and_takes_large_ones(
    ingress: RunningIngress, examples: tuple[Example, ...]
) -> None:
    settings = ingress.settings
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, settings.events_topic)]
        )
    finally:
        await admin.close()
    [(_, _, _, _, entries)] = response.resources
    configs = {entry[0]: entry[1] for entry in entries}
    assert configs["retention.ms"] == "-1"
    assert int(configs["max.message.bytes"]) >= 25 * 1024 * 1024

    # Kafka's default record limit is 1 MB; GitHub sends up to 25 MB.
    push = dict(next(e for e in examples if e.event == "push").payload)
    push["padding"] = "x" * (3 * 1024 * 1024)
    body = orjson.dumps(push)
    delivery = signed_delivery(body, "push", SECRET)
    assert (await ingress.post(delivery))[0] == 202
    [record] = await read_topic(settings)
    assert record.value == body

"""``hookstream dlq list|show|retry`` against the real broker and real workers.

Processor code cannot be fixed in a test, so the fix that makes a retry succeed is an
outside one: an HTTP target that was down is up again. A record that still fails shows
the other side: it is parked again, its source now the retry topic.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer, TopicPartition

from deploy.commands import hookstream_argv
from deploy.dlq import RETRY_OF_HEADER
from deploy.send import signed_delivery
from processors.dead_letter import ERROR_HEADER, PROCESSOR_HEADER, SOURCE_HEADER
from processors.offsets import OffsetReader
from schemas.dispatch import dispatch_id
from schemas.envelope import RecordHeader
from schemas.settings import Settings
from schemas.topics import ensure_topics, retry_topic, topic_specs
from tests.helpers import (
    SECRET,
    RunningIngress,
    WorkerProcess,
    eventually,
    free_port_pair,
    processor_env,
    read_topic,
    sample,
    serve_posts,
)

pytestmark = pytest.mark.integration

POISON = b'{"action": "opened", "number": 1, "pull_request": 5}'


async def dlq(settings: Settings, *args: str, **env: str) -> tuple[int, str, str]:
    """``hookstream dlq ARGS`` in its own process, as a user runs it."""
    process = await asyncio.create_subprocess_exec(
        *hookstream_argv("dlq", *args), env=processor_env(settings, COLUMNS="160", **env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def listed(settings: Settings, topic: str) -> list[dict[str, Any]]:
    code, out, err = await dlq(settings, "list", topic, "--format", "json")
    assert code == 0, err
    return [orjson.loads(line) for line in out.splitlines() if line]


async def records(settings: Settings, topic: str, partitions: int = 1) -> list[Any]:
    return await read_topic(settings, topic, partitions)


async def at_least(settings: Settings, topic: str, n: int, partitions: int = 1) -> list[Any]:
    found = await records(settings, topic, partitions)
    return found if len(found) >= n else []


async def test_a_record_that_still_fails_is_parked_again_from_its_retry_topic(
    ingress: RunningIngress, tmp_path: Path
) -> None:
    settings = ingress.settings
    await ensure_topics(settings.kafka_bootstrap, topic_specs(settings))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        # A pull_request delivery whose pull_request is not an object: the extractor fails.
        poison = await producer.send_and_wait(
            settings.events_topic, POISON, key=b"1",
            headers=[(RecordHeader.EVENT, b"pull_request"), (RecordHeader.DELIVERY, b"poison")],
        )  # fmt: skip
    finally:
        await producer.stop()
    env = processor_env(
        settings, HOOKSTREAM_QUERY_PORT=str(free_port_pair()), HOOKSTREAM_SINK_FLUSH_S="0.2"
    )
    worker = WorkerProcess("insights", env, tmp_path / "insights.log")
    await worker.start()
    try:
        [dead] = await eventually(
            lambda: at_least(settings, settings.dlq_topic, 1), f"the dead letter ({worker.log})"
        )
        source = f"{settings.events_topic}/{poison.partition}/{poison.offset}"
        assert dict(dead.headers)[SOURCE_HEADER] == source.encode()

        # list: what failed, where, and that it was not retried yet.
        [row] = await listed(settings, settings.dlq_topic)
        assert {k: row[k] for k in ("offset", "processor", "source", "delivery", "event")} == {
            "offset": 0, "processor": "insights", "source": source, "delivery": "poison",
            "event": "pull_request",
        }  # fmt: skip
        assert row["retried"] == "no"
        assert row["error"].startswith("ValidationError: ")
        assert row["age"].endswith((" s", " min"))
        code, table, _ = await dlq(settings, "list", settings.dlq_topic)
        assert code == 0
        assert table.splitlines()[0].split(" | ")[-1] == "error"
        assert "| insights " in table
        assert table.endswith("(1 row)\n")

        # show: every header, the error in full, the body as JSON.
        code, shown, err = await dlq(settings, "show", settings.dlq_topic, "0")
        assert code == 0, err
        assert f"{settings.dlq_topic}/0: dead-lettered " in shown
        assert "  x-github-delivery: poison" in shown
        assert f"  {PROCESSOR_HEADER}: insights" in shown
        assert dict(dead.headers)[ERROR_HEADER].decode().replace("\n", "\n    ") in shown
        body = shown.split(f"body: {len(POISON)} bytes, JSON\n", 1)[1]
        assert orjson.loads(body) == orjson.loads(POISON)

        # Mistakes get one line and exit 2.
        for args, message in [
            (("show", settings.dlq_topic, "5"), "offset 5 is not in"),
            (("retry", settings.dlq_topic, "--offset", "1"), "offset 1 is not in"),
            (("list", "no.such.dlq"), "no.such.dlq is not a dead-letter topic"),
            (("retry", settings.dlq_topic), "give --offset N (repeatable) or --all"),
        ]:
            code, _, err = await dlq(settings, *args)
            assert (code, err.count("\n")) == (2, 1), (args, err)
            assert message in err

        # retry: the copy goes to the retry topic, fails again, and is parked again.
        code, out, err = await dlq(settings, "retry", settings.dlq_topic, "--all")
        assert code == 0, err
        retry = retry_topic(settings.events_topic, "insights")
        assert f"{settings.dlq_topic}/0 → {retry}/{poison.partition} (insights)" in out
        _, again = await eventually(
            lambda: at_least(settings, settings.dlq_topic, 2),
            f"the second dead letter ({worker.log})",
        )
        headers = dict(again.headers)
        assert again.value == POISON
        assert again.key == b"1"
        assert headers[SOURCE_HEADER] == f"{retry}/{poison.partition}/0".encode()
        assert headers[RETRY_OF_HEADER] == f"{settings.dlq_topic}/0".encode()
        assert headers[RecordHeader.DELIVERY] == b"poison"
        assert headers[ERROR_HEADER].startswith(b"ValidationError: ")
        # The original headers once each: the first dead letter's own are not carried over.
        assert [k for k, _ in again.headers].count(ERROR_HEADER) == 1

        first, second = await listed(settings, settings.dlq_topic)
        assert (first["retried"], second["retried"]) == ("yes", "no")
        assert second["source"] == f"{retry}/{poison.partition}/0"
        assert second["error"] == first["error"]

        # Retried already: refused, unless forced.
        code, _, err = await dlq(settings, "retry", settings.dlq_topic, "--offset", "0")
        assert code == 2
        assert "was retried already" in err
        assert len(await records(settings, retry, settings.events_partitions)) == 1
    finally:
        await worker.stop()


@dataclass
class Target:
    """An HTTP target that answers 503 while it is down."""

    down: bool = True
    attempts: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)

    async def handle(self, request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        self.attempts[key] += 1
        if self.down:
            return web.Response(status=503, headers={"Retry-After": "0"})
        self.received[key] += 1
        return web.Response(status=204)


@pytest.fixture
async def targets() -> AsyncIterator[dict[str, tuple[Target, str]]]:
    made = {"ci": Target(), "audit": Target(down=False)}
    async with serve_posts({name: t.handle for name, t in made.items()}) as urls:
        yield {name: (made[name], url) for name, url in urls.items()}


async def committed_past(settings: Settings, group: str, record: Any) -> bool:
    """Whether ``group`` committed past ``record`` (a transaction's marker may follow it)."""
    async with OffsetReader(settings.kafka_bootstrap) as reader:
        [offsets] = await reader.read(group, [TopicPartition(record.topic, record.partition)])
    offset: int = record.offset
    return (offsets.committed or 0) > offset


async def test_a_dispatch_whose_target_was_down_is_sent_once_after_a_retry(
    ingress: RunningIngress, targets: dict[str, tuple[Target, str]], tmp_path: Path
) -> None:
    settings = ingress.settings
    (ci, ci_url), (audit, audit_url) = targets["ci"], targets["audit"]
    triggers = tmp_path / "triggers.yml"
    triggers.write_text(f"""
targets:
  ci: {{url: "{ci_url}", secret_env: CI_SECRET, max_attempts: 2, backoff_s: 0.05}}
  audit: {{url: "{audit_url}", secret_env: CI_SECRET}}
workflows:
  build:
    on: ["github:*/*:push"]
    targets: [ci, audit]
""")
    env = processor_env(settings, CI_SECRET="s3cret", HOOKSTREAM_TRIGGERS_FILE=str(triggers))
    worker = WorkerProcess("triggers", env, tmp_path / "triggers.log")
    await worker.start()
    try:
        delivery = signed_delivery(sample("push").body, "push", SECRET)
        assert (await ingress.post(delivery))[0] == 202
        key = dispatch_id("1", delivery.delivery_id, "build")
        dlq_topic = settings.dispatch_dlq_topic
        await eventually(
            lambda: at_least(settings, dlq_topic, 1), f"ci's dead letter ({worker.log})"
        )
        assert (ci.attempts[key], ci.received[key], audit.received[key]) == (2, 0, 1)
        [row] = await listed(settings, dlq_topic)
        assert (row["processor"], row["source"], row["retried"]) == (
            "triggers", settings.dispatch_topic, "no",
        )  # fmt: skip
        assert row["error"] == "HTTP 503"

        ci.down = False  # the fix
        code, out, err = await dlq(settings, "retry", dlq_topic, "--all")
        assert code == 0, err
        assert "sent 1 dead letter back" in out
        await eventually(lambda: _is(ci.received[key] == 1), f"the retried POST ({worker.log})")

        # Once: a second retry sends nothing, and only the target that failed got it again.
        code, out, err = await dlq(settings, "retry", dlq_topic, "--all")
        assert (code, out.strip()) == (0, f"nothing to retry in {dlq_topic}: all retried"), err
        retry = retry_topic(settings.dispatch_topic, "triggers")
        [copy] = await records(settings, retry, settings.dispatch_partitions)
        assert dict(copy.headers)[RETRY_OF_HEADER] == f"{dlq_topic}/0".encode()
        assert ERROR_HEADER not in dict(copy.headers)
        group = settings.app_id("triggers")
        await eventually(
            lambda: committed_past(settings, group, copy), "the worker to commit the copy"
        )
        assert (ci.attempts[key], ci.received[key], audit.received[key]) == (3, 1, 1)
        [row] = await listed(settings, dlq_topic)
        assert row["retried"] == "yes"
    finally:
        await worker.stop()


async def _is(value: bool) -> bool:
    return value

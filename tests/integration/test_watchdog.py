"""The worker's watchdog against the real broker: offsets per partition, and a stall named.

A triggers worker dispatches to an HTTP target that never answers, so the dispatch's
record can never be acknowledged: its partition has lag and no progress. The worker
must say so in its log and in its metrics, while the event partitions show none.
"""

from __future__ import annotations

import asyncio
import re
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaProducer

from deploy.corpus import Example
from deploy.send import signed_delivery
from schemas.envelope import RecordHeader
from schemas.settings import Settings
from schemas.topics import retry_topic
from tests.helpers import (
    SECRET,
    RunningIngress,
    WorkerProcess,
    eventually,
    free_port_pair,
    processor_env,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def silent_target() -> AsyncIterator[str]:
    """An HTTP target that takes every request and never answers."""
    never = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await never.wait()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/dispatch", hang)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}/dispatch"
    never.set()
    await server.close()


async def test_a_partition_with_lag_and_no_progress_is_reported(
    ingress: RunningIngress,
    examples: tuple[Example, ...],
    silent_target: str,
    tmp_path: Path,
) -> None:
    settings = ingress.settings
    worker, port = _watched_triggers(settings, silent_target, "push", 10, tmp_path)
    push = next(e for e in examples if e.name == "push#5")
    assert (await ingress.post(signed_delivery(push.body, "push", SECRET)))[0] == 202
    await worker.start()
    try:
        # Longer than Faust's commit interval (2.8 s), so only the stuck partition warns.
        [warning] = await eventually(lambda: _warnings(worker), "the watchdog's warning", 90)
        assert warning["level"] == "warning"
        assert str(warning["partition"]).startswith(f"{settings.dispatch_topic}/")
        assert (warning["lag"], warning["committed"], warning["log_end"]) == (1, None, 1)
        assert float(str(warning["stalled_s"])) >= 10

        text = await _metrics(port)
        lag = _series(text, "hookstream_worker_lag")
        stalled = _series(text, "hookstream_worker_seconds_without_progress")
        committed = _series(text, "hookstream_worker_committed_offset")
        end = _series(text, "hookstream_worker_log_end_offset")
        stuck = str(warning["partition"])
        assert lag[stuck] == 1
        assert committed[stuck] == -1
        assert stalled[stuck] >= 10
        # The event log's partitions (the push and nothing else) made their progress.
        events = {k: v for k, v in end.items() if k.startswith(f"{settings.events_topic}/")}
        assert sorted(events) == [f"{settings.events_topic}/{p}" for p in range(3)]
        assert sum(events.values()) == 1
        assert all(committed[k] == v for k, v in events.items() if v)
        assert all(lag[k] == 0 and stalled[k] == 0 for k in events)
    finally:
        await worker.stop(signal.SIGKILL)  # a clean stop would wait out the hung request


async def test_a_retry_topic_read_to_its_last_transaction_marker_has_no_lag(
    ingress: RunningIngress,
    examples: tuple[Example, ...],
    silent_target: str,
    tmp_path: Path,
) -> None:
    """`hookstream dlq retry` writes in transactions: the commit marker after the last
    record is never received, so the worker commits short of the log end. That is not lag,
    and not a stall."""
    settings = ingress.settings
    # Dispatches on releases: the push below is read, acknowledged, done.
    worker, port = _watched_triggers(settings, silent_target, "release", 5, tmp_path)
    await worker.start()
    retry = retry_topic(settings.events_topic, "triggers")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                                transactional_id=f"watchdog-{uuid.uuid4().hex}")  # fmt: skip
    await producer.start()
    try:
        push = next(e for e in examples if e.name == "push#5")
        async with producer.transaction():
            headers = [(RecordHeader.EVENT, b"push"), (RecordHeader.HOOK_ID, b"1"),
                       (RecordHeader.DELIVERY, uuid.uuid4().hex.encode()),
                       (RecordHeader.RECEIVED_AT, b"2026-11-26T04:00:00+00:00")]  # fmt: skip
            await producer.send_and_wait(retry, push.body, partition=0, headers=headers)
        name = f"{retry}/0"

        async def committed_past_the_record() -> dict[str, float] | None:
            text = await _metrics(port)
            committed = _series(text, "hookstream_worker_committed_offset")
            return _series(text, "hookstream_worker_lag") if committed.get(name) == 1 else None

        await eventually(committed_past_the_record, "the retried record committed", 90)
        await asyncio.sleep(8)  # past the 5 s after which a stall would be warned of
        text = await _metrics(port)
        assert _series(text, "hookstream_worker_log_end_offset")[name] == 2  # the marker
        assert _series(text, "hookstream_worker_lag")[name] == 0
        assert _series(text, "hookstream_worker_seconds_without_progress")[name] == 0
        assert await _warnings(worker) == []
    finally:
        await producer.stop()
        await worker.stop(signal.SIGTERM)


def _watched_triggers(
    settings: Settings, target: str, event: str, stall_s: int, tmp_path: Path
) -> tuple[WorkerProcess, int]:
    """A triggers worker dispatching ``event`` to ``target``, its watchdog looking often;
    and its metrics port."""
    triggers = tmp_path / "triggers.yml"
    triggers.write_text(
        f'targets:\n  silent: {{url: "{target}", secret_env: SILENT_SECRET, '
        "timeout_s: 60, max_attempts: 1}\n"
        f"workflows:\n  build:\n    on: ['github:*/*:{event}']\n    targets: [silent]\n"
    )
    port = free_port_pair()
    env = processor_env(
        settings, SILENT_SECRET="s", HOOKSTREAM_TRIGGERS_FILE=str(triggers),
        HOOKSTREAM_WORKER_METRICS_PORT=str(port), HOOKSTREAM_WATCHDOG_INTERVAL_S="0.5",
        HOOKSTREAM_STALL_WARNING_S=str(stall_s),
    )  # fmt: skip
    return WorkerProcess("triggers", env, tmp_path / "worker.log"), port


async def _metrics(port: int) -> str:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            return await response.text()
    except aiohttp.ClientError:
        return ""


async def _warnings(worker: WorkerProcess) -> list[dict[str, object]]:
    lines = [orjson.loads(line) for line in worker.log.read_text().splitlines()
             if line.startswith("{")]  # fmt: skip
    return [line for line in lines if line["logger"] == "hookstream.watchdog"]


def _series(text: str, name: str) -> dict[str, float]:
    """{"topic/partition": value} of one gauge in Prometheus text."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1 :].rsplit("} ", 1)
            parts = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            found[f"{parts['topic']}/{parts['partition']}"] = float(value)
    return found

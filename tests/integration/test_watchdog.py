"""The worker's watchdog against the real broker: offsets per partition, and a stall named.

A triggers worker dispatches to an HTTP target that never answers, so the dispatch's
record can never be acknowledged: its partition has lag and no progress. The worker
must say so in its log and in its metrics, while the event partitions show none.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from deploy.corpus import Example
from deploy.send import signed_delivery
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
    triggers = tmp_path / "triggers.yml"
    triggers.write_text(
        f'targets:\n  silent: {{url: "{silent_target}", secret_env: SILENT_SECRET, '
        "timeout_s: 60, max_attempts: 1}\n"
        "workflows:\n  build:\n    on: ['github:*/*:push']\n    targets: [silent]\n"
    )
    port = free_port_pair()
    env = processor_env(
        settings, SILENT_SECRET="s", HOOKSTREAM_TRIGGERS_FILE=str(triggers),
        HOOKSTREAM_WORKER_METRICS_PORT=str(port), HOOKSTREAM_WATCHDOG_INTERVAL_S="0.5",
        HOOKSTREAM_STALL_WARNING_S="10",
    )  # fmt: skip
    worker = WorkerProcess("triggers", env, tmp_path / "worker.log")
    push = next(e for e in examples if e.name == "push#5")
    assert (await ingress.post(signed_delivery(push.body, "push", SECRET)))[0] == 202
    await worker.start()
    try:

        async def metrics() -> str:
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{port}/metrics") as response,
                ):
                    return await response.text()
            except aiohttp.ClientError:
                return ""

        async def stalled_partition() -> list[dict[str, object]]:
            lines = [orjson.loads(line) for line in worker.log.read_text().splitlines()
                     if line.startswith("{")]  # fmt: skip
            return [line for line in lines if line["logger"] == "hookstream.watchdog"]

        # Longer than Faust's commit interval (2.8 s), so only the stuck partition warns.
        [warning] = await eventually(stalled_partition, "the watchdog's warning", 90)
        assert warning["level"] == "warning"
        assert str(warning["partition"]).startswith(f"{settings.dispatch_topic}/")
        assert (warning["lag"], warning["committed"], warning["log_end"]) == (1, None, 1)
        assert float(str(warning["stalled_s"])) >= 10

        text = await metrics()
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


def _series(text: str, name: str) -> dict[str, float]:
    """{"topic/partition": value} of one gauge in Prometheus text."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1 :].rsplit("} ", 1)
            parts = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            found[f"{parts['topic']}/{parts['partition']}"] = float(value)
    return found

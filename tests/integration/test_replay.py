"""``hookstream replay insights`` end to end: fresh tables swapped in while queries run,
an interrupted replay resumed, a hung worker named, a dry run that changes nothing.

The log holds the corpus (three times over, with fresh delivery ids) and the scripted
scenario; a live insights worker projects it first, and its tables are what every replay
must reproduce, row for row.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from deploy.commands import hookstream_argv
from deploy.corpus import Example
from deploy.replay import IDLE_GROUP_STATES, group_state
from deploy.send import signed_delivery
from processors.offsets import OffsetReader
from projections.query import QueryError, QueryServiceUnavailable, query_service
from projections.rebuild import SUFFIX
from schemas.settings import Settings
from tests.helpers import (
    SECRET,
    WorkerProcess,
    eventually,
    free_port_pair,
    make_settings,
    processor_env,
    start_ingress,
    stop_ingress,
)
from tests.integration.insights_scenario import Scenario, snapshot

pytestmark = pytest.mark.integration

COUNT = "SELECT count() FROM deliveries FINAL"


@dataclass
class Logged:
    settings: Settings
    env: dict[str, str]
    port: int
    deliveries: int
    live: dict[str, Any]
    tmp: Path

    async def sql(self, query: str) -> list[list[Any]]:
        return (await query_service(self.port, query)).rows

    def replay(self, *args: str) -> subprocess.Popen[bytes]:
        # Its own session: killing the group kills the replay and the worker it started.
        return subprocess.Popen(
            hookstream_argv("replay", "insights", *args), env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip

    async def under_way(self) -> bool:
        # Rows reach the rebuilt table before their offsets are committed: watch the rows.
        try:
            [[rows]] = await self.sql(f"SELECT count() FROM deliveries{SUFFIX}")
        except (QueryServiceUnavailable, QueryError):
            return False  # no replay worker serving yet, or its tables not made yet
        return bool(0 < rows < self.deliveries)

    async def idle(self) -> bool:
        state, _ = await group_state(self.settings, self.settings.app_id("insights"))
        return state in IDLE_GROUP_STATES

    async def committed(self) -> int:
        async with OffsetReader(self.settings.kafka_bootstrap) as reader:
            partitions = [TopicPartition(self.settings.events_topic, p)
                          for p in range(self.settings.events_partitions)]  # fmt: skip
            read = await reader.read(self.settings.app_id("insights"), partitions)
        return sum(o.committed or 0 for o in read)


@pytest.fixture(scope="module")
async def logged(
    kafka_bootstrap: str, examples: tuple[Example, ...], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Logged]:
    tmp = tmp_path_factory.mktemp("replay")
    settings = make_settings(kafka_bootstrap, tmp)
    server, ingress = await start_ingress(settings)
    port = free_port_pair()
    env = processor_env(
        settings, HOOKSTREAM_QUERY_PORT=str(port), HOOKSTREAM_SINK_FLUSH_S="0.2",
        HOOKSTREAM_SINK_BATCH_ROWS="25", HOOKSTREAM_REPLAY_STALL_S="8",
        # A killed worker leaves its group after this; a replay waits for that.
        HOOKSTREAM_KAFKA_SESSION_TIMEOUT_S="6",
    )  # fmt: skip
    deliveries = [(e.event, e.body) for e in examples] * 3 + Scenario(examples).deliveries
    try:
        await ingress.wait_ready()
        for event, body in deliveries:
            assert (await ingress.post(signed_delivery(body, event, SECRET)))[0] == 202
        worker = WorkerProcess("insights", env, tmp / "live.log")
        await worker.start()
        try:

            async def projected() -> bool:
                try:
                    return bool((await query_service(port, COUNT)).rows == [[len(deliveries)]])
                except QueryServiceUnavailable:
                    return False

            await eventually(projected, "the live tables", 180)
            live = await snapshot(lambda q: _rows(port, q))
        finally:
            await worker.stop()
        yield Logged(settings, env, port, len(deliveries), live, tmp)
    finally:
        await stop_ingress(server, ingress)


async def _rows(port: int, query: str) -> list[list[Any]]:
    return (await query_service(port, query)).rows


async def finish(process: subprocess.Popen[bytes], within: float = 300) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(asyncio.to_thread(process.communicate), within)
    return process.returncode, out.decode(), err.decode()


async def test_a_dry_run_prints_the_plan_and_changes_nothing(logged: Logged) -> None:
    before = await logged.committed()
    code, out, err = await finish(logged.replay("--dry-run"), 120)
    assert code == 0, err
    [line] = out.splitlines()
    group = logged.settings.app_id("insights")
    assert line.startswith(f"replay insights: {logged.deliveries:,} records of "
                           f"{logged.settings.events_topic} [0:0..")  # fmt: skip
    assert f"with consumer group {group}; tables deliveries, pull_requests" in line
    assert await logged.committed() == before == logged.deliveries
    assert not (logged.settings.data_dir / "replay").exists()


async def test_a_replay_swaps_in_equal_tables_and_queries_never_see_a_partial_one(
    logged: Logged,
) -> None:
    replay = logged.replay()
    reads: list[int] = []
    errors: list[str] = []

    async def keep_querying() -> None:
        # Every answer is the whole table: the old one until the swap, the new one after.
        while replay.poll() is None:
            try:
                reads.extend(row[0] for row in await logged.sql(COUNT))
            except QueryServiceUnavailable:
                pass  # between the live worker's stop and the replay worker's start
            except QueryError as exc:
                errors.append(str(exc))
            await asyncio.sleep(0.05)

    loop = asyncio.create_task(keep_querying())
    code, out, err = await finish(replay)
    await loop
    assert code == 0, err[-3000:]
    assert out.splitlines()[-1] == (
        f"replay of insights done: {logged.deliveries:,} records read; the rebuilt tables are live"
    )
    assert "records" in err  # the progress lines
    assert errors == []
    assert reads
    assert set(reads) == {logged.deliveries}
    await assert_tables_equal_live(logged, "after")


async def assert_tables_equal_live(logged: Logged, name: str) -> None:
    """A normal worker, started on the replayed tables, answers as the live ones did."""
    worker = WorkerProcess("insights", logged.env, logged.tmp / f"{name}.log")
    await worker.start()
    try:
        await eventually(lambda: _answers(logged), f"the worker {name} the replay")
        assert await snapshot(logged.sql) == logged.live
    finally:
        await worker.stop()


async def _answers(logged: Logged) -> bool:
    try:
        return bool(await logged.sql(COUNT))
    except QueryServiceUnavailable:
        return False


async def test_a_killed_replay_resumes_and_ends_equal(logged: Logged) -> None:
    first = logged.replay()

    await eventually(logged.under_way, "the replay to be under way", 180)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    await eventually(lambda: logged.idle(), "the killed worker to leave its group", 60)
    code, out, err = await finish(logged.replay())
    assert code == 0, err[-3000:]
    assert out.splitlines()[0].startswith(f"resume replay insights: {logged.deliveries:,}")
    await assert_tables_equal_live(logged, "resumed")


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def test_a_hung_worker_fails_the_replay_naming_the_stuck_partitions(logged: Logged) -> None:
    replay = logged.replay()

    await eventually(logged.under_way, "the replay to be under way", 180)
    [worker] = _children(replay.pid)
    os.kill(worker, signal.SIGSTOP)  # hung: alive, reading nothing
    stopped_at = time.monotonic()
    code, _, err = await finish(replay, 180)
    assert code == 1, err[-3000:]
    assert "replay of insights is stuck: github.events" in err
    assert "(lag " in err
    assert "no progress for" in err
    # Failed within the configured 8 s of no progress (68 s if the worker had committed
    # nothing yet: the start grace), plus the checks' own pace.
    assert time.monotonic() - stopped_at < 120
    # The failed replay is resumable: a later run finishes it.
    await eventually(lambda: logged.idle(), "the hung worker to leave its group", 60)
    code, out, err = await finish(logged.replay())
    assert code == 0, err[-3000:]
    assert out.splitlines()[0].startswith("resume replay insights")

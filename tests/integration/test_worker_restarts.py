"""Workers restarted under traffic never lose their place (issue: restarted processors).

A producer keeps writing deliveries to ``github.events`` while a worker is stopped and
started again and again — SIGTERM (a deploy, a node drain) and SIGKILL (a crash) — with
deliveries arriving during every start-up. Afterwards every delivery must have been
processed exactly once by the processor's own rules, and the group's committed offsets
must reach the end of every topic it reads.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import random
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from deploy.commands import hookstream_argv
from deploy.corpus import Example
from processors.offsets import OffsetReader
from schemas.dispatch import dispatch_id
from schemas.envelope import RecordHeader
from schemas.settings import Settings
from schemas.topics import ensure_topics, topic_specs
from tests.helpers import (
    Life,
    WorkerProcess,
    eventually,
    free_port_pair,
    make_settings,
    processor_env,
    read_topic,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

# Enough restarts that a fault seen in about one restart in six shows almost surely.
RESTARTS = 12
TARGET_SECRET = "restart-s3cret"


@dataclass
class Traffic:
    """Writes push deliveries to the event log at a steady pace, spread over partitions."""

    settings: Settings
    body: bytes
    sent: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event, pace_s: float = 0.04) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap, acks="all", linger_ms=0
        )
        await producer.start()
        try:
            while not stop.is_set():
                guid = f"restart-{len(self.sent):06d}"
                await producer.send_and_wait(
                    self.settings.events_topic,
                    self.body,
                    key=f"repo-{len(self.sent) % 17}".encode(),
                    headers=[(RecordHeader.EVENT, b"push"), (RecordHeader.HOOK_ID, b"1"),
                             (RecordHeader.DELIVERY, guid.encode()),
                             (RecordHeader.CONTENT_TYPE, b"application/json")],
                )  # fmt: skip
                self.sent.append(guid)
                await asyncio.sleep(pace_s)
        finally:
            await producer.stop()


async def restart_under_traffic(
    worker: WorkerProcess, traffic: Traffic, rng: random.Random
) -> None:
    """Start and stop the worker RESTARTS times while deliveries keep arriving."""
    await ensure_topics(traffic.settings.kafka_bootstrap, topic_specs(traffic.settings))
    stop = asyncio.Event()
    producing = asyncio.create_task(traffic.run(stop))
    try:
        await asyncio.sleep(1.0)  # deliveries are waiting before the first start too
        for round_ in range(RESTARTS):
            await worker.start()
            # Stop anywhere from the middle of start-up to well after it.
            await asyncio.sleep(rng.uniform(2.0, 9.0))
            await worker.stop(signal.SIGKILL if round_ % 3 == 2 else signal.SIGTERM)
        await worker.start()
        await asyncio.sleep(3.0)  # traffic goes on into the last start-up
    finally:
        stop.set()
        await producing
    assert producing.exception() is None


async def committed_lag(settings: Settings, processor: str, topics: list[str]) -> dict[str, int]:
    """Per partition, how far the processor's committed offset is behind the log's end."""
    async with OffsetReader(settings.kafka_bootstrap) as reader:
        offsets = await reader.read(settings.app_id(processor), await reader.partitions(topics))
    return {p.name: p.lag for p in offsets if p.end and p.committed != p.end}


async def settle(settings: Settings, processor: str, topics: list[str]) -> None:
    """Wait until the group has committed up to every log end; else fail naming the lag."""
    lag: dict[str, int] = {}

    async def at_end() -> bool:
        nonlocal lag
        try:
            lag = await committed_lag(settings, processor, topics)
        except KafkaError as exc:
            if not exc.retriable:  # a new broker may still be electing the coordinator
                raise
            return False
        return not lag

    try:
        await eventually(at_end, "committed offsets at the log end", within=90)
    except AssertionError:
        raise AssertionError(f"committed offsets never reached the log end: lag {lag}") from None


def repeats_without_a_crash(
    sightings: dict[str, list[list[float]]], lives: list[Life]
) -> dict[str, list[int]]:
    """Ids seen more than once, by any of their kinds of sighting, with no crash to excuse it.

    ``sightings`` holds, per id, lists of times of each kind (emissions, POSTs). Each
    sighting belongs to the last life started before it (a life starts only after the
    previous one exited, so a sighting recorded late still lands in its own life). A
    crash (SIGKILL) in the span of an id's sightings may repeat any of them — the
    documented at-least-once window; without one, each kind is seen exactly once.
    """
    starts = [life.started for life in lives]
    repeated = {}
    for key, kinds in sightings.items():
        owners = sorted(bisect.bisect_right(starts, t) - 1 for times in kinds for t in times)
        crashed = any(life.ended_by == signal.SIGKILL for life in lives[owners[0] : owners[-1]])
        if not crashed and any(len(times) != 1 for times in kinds):
            repeated[key] = owners
    return repeated


# --- triggers ---------------------------------------------------------------------------


@dataclass
class Target:
    """An HTTP target that records when each dispatch id was POSTed."""

    posts: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        if request.headers["X-Hookstream-Attempt"] == "1":
            self.posts[request.headers["Idempotency-Key"]].append(time.time())
        return web.Response(status=204)


@pytest.fixture
async def target() -> AsyncIterator[tuple[Target, str]]:
    made = Target()
    app = web.Application()
    app.router.add_post("/dispatch", made.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield made, f"http://127.0.0.1:{server.port}/dispatch"
    await server.close()


def sink_triggers(tmp_path: Path, url: str) -> Path:
    """A trigger file: every push dispatches workflow ``build`` to the HTTP target ``url``."""
    triggers = tmp_path / "triggers.yml"
    triggers.write_text(
        f'targets:\n  sink: {{url: "{url}", secret_env: RESTART_SECRET}}\n'
        "workflows:\n  build:\n    on: ['github:*/*:push']\n    targets: [sink]\n"
    )
    return triggers


def push_body(examples: tuple[Example, ...]) -> bytes:
    return next(e for e in examples if e.name == "push#5").body


async def test_triggers_worker_restarted_under_traffic_dispatches_each_delivery_once(
    kafka_bootstrap: str,
    examples: tuple[Example, ...],
    target: tuple[Target, str],
    tmp_path: Path,
) -> None:
    settings = make_settings(kafka_bootstrap, tmp_path)
    sink, url = target
    triggers = sink_triggers(tmp_path, url)
    worker = WorkerProcess(
        "triggers",
        processor_env(settings, RESTART_SECRET=TARGET_SECRET,
                      HOOKSTREAM_TRIGGERS_FILE=str(triggers),
                      HOOKSTREAM_KAFKA_SESSION_TIMEOUT_S="10"),
        tmp_path / "worker.log",
    )  # fmt: skip
    traffic = Traffic(settings, push_body(examples))
    await restart_under_traffic(worker, traffic, random.Random(11))
    try:
        expected = {dispatch_id("1", guid, "build") for guid in traffic.sent}
        topics = [settings.events_topic, settings.dispatch_topic]
        await settle(settings, "triggers", topics)
        with contextlib.suppress(AssertionError):  # the assertions below say what is missing
            await eventually(lambda: _all_posted(sink, expected), "every dispatch POSTed", 60)
    finally:
        await worker.stop()
    await settle(settings, "triggers", topics)  # and still there after a clean stop

    emitted: dict[str, list[float]] = defaultdict(list)
    for record in await read_topic(settings, settings.dispatch_topic, settings.dispatch_partitions):
        emitted[record.key.decode()].append(record.timestamp / 1000)
    assert set(emitted) == expected, f"never emitted: {sorted(expected - set(emitted))}"
    assert set(sink.posts) == expected, f"never POSTed: {sorted(expected - set(sink.posts))}"
    # A clean stop repeats nothing: one emission, one POST, unless a crash intervened.
    # (Retries after a POST that got no 2xx are the dispatcher's own, marked attempt > 1.)
    twice = repeats_without_a_crash(
        {key: [emitted[key], sink.posts[key]] for key in expected}, worker.lives
    )
    assert not twice, f"emitted or POSTed again without a crash (id: lives): {twice}"
    # The worker's own log names no lost partition.
    assert "Traceback" not in worker.log.read_text()


async def _all_posted(sink: Target, expected: set[str]) -> bool:
    return expected <= set(sink.posts)


# --- insights ---------------------------------------------------------------------------


async def test_insights_worker_restarted_under_traffic_writes_each_delivery_once(
    kafka_bootstrap: str, examples: tuple[Example, ...], tmp_path: Path
) -> None:
    from projections.query import QueryServiceUnavailable, query_service

    settings = make_settings(kafka_bootstrap, tmp_path)
    port = free_port_pair()
    worker = WorkerProcess(
        "insights",
        processor_env(settings, HOOKSTREAM_QUERY_PORT=str(port), HOOKSTREAM_SINK_FLUSH_S="0.2",
                      HOOKSTREAM_KAFKA_SESSION_TIMEOUT_S="10"),
        tmp_path / "worker.log",
    )  # fmt: skip
    traffic = Traffic(settings, push_body(examples))
    await restart_under_traffic(worker, traffic, random.Random(7))

    async def counts() -> tuple[int, int] | None:
        try:
            rows = (await query_service(
                port, "SELECT count(), uniqExact(delivery_id) FROM deliveries FINAL"
            )).rows  # fmt: skip
        except QueryServiceUnavailable:
            return None
        return rows[0][0], rows[0][1]

    try:
        await settle(settings, "insights", [settings.events_topic])
        got = await eventually(counts, "the query service")
    finally:
        await worker.stop()
    await settle(settings, "insights", [settings.events_topic])
    assert got == (len(traffic.sent), len(traffic.sent))


def test_repeats_are_only_excused_by_a_crash_between_them() -> None:
    lives = [Life(0.0, signal.SIGTERM), Life(10.0, signal.SIGKILL), Life(20.0)]
    sightings = {
        "once": [[1.0], [1.5]],
        "posted twice in one life": [[11.0], [11.5, 12.0]],
        "emitted again after a clean stop": [[2.0, 15.0], [2.5]],
        "posted again after a crash": [[12.0], [12.5, 21.0]],
        "recorded after the crash, in the crashed life": [[19.9], [19.95, 25.0]],
        "emitted twice, posted three times, a crash between": [[15.0, 21.0], [16.0, 21.5, 22.0]],
        "across both stops": [[3.0], [3.5, 22.0]],
    }
    assert repeats_without_a_crash(sightings, lives) == {
        "posted twice in one life": [1, 1, 1],
        "emitted again after a clean stop": [0, 0, 1],
    }


async def test_replays_of_a_full_log_read_every_record(
    kafka_bootstrap: str, examples: tuple[Example, ...], target: tuple[Target, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    # Records already in the log are prefetched while the worker restores its table from
    # the changelog; each replay must still read them all (it used to stall about half
    # the time, its lag frozen). Effects are off: the target hears nothing.
    settings = make_settings(kafka_bootstrap, tmp_path)
    sink, url = target
    triggers = sink_triggers(tmp_path, url)
    env = processor_env(settings, RESTART_SECRET=TARGET_SECRET,
                        HOOKSTREAM_TRIGGERS_FILE=str(triggers))  # fmt: skip
    traffic = Traffic(settings, push_body(examples))
    await ensure_topics(settings.kafka_bootstrap, topic_specs(settings))
    stop = asyncio.Event()
    producing = asyncio.create_task(traffic.run(stop, pace_s=0.05))
    await asyncio.sleep(1.0)
    stop.set()
    await producing
    worker = WorkerProcess("triggers", env, tmp_path / "worker.log")
    await worker.start()
    try:
        await settle(settings, "triggers", [settings.events_topic, settings.dispatch_topic])
    finally:
        await worker.stop()
    posted = sum(len(times) for times in sink.posts.values())
    assert posted == len(traffic.sent)

    for attempt in range(5):
        replay = await asyncio.create_subprocess_exec(
            *hookstream_argv(), "replay", "triggers",
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            out, _ = await asyncio.wait_for(replay.communicate(), 90)
        except TimeoutError:
            replay.kill()
            lag = await committed_lag(settings, "triggers", [settings.events_topic])
            raise AssertionError(f"replay {attempt + 1} stalled with lag {lag}") from None
        assert replay.returncode == 0, out.decode()[-2000:]
    assert sum(len(times) for times in sink.posts.values()) == posted

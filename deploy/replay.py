"""``hookstream replay PROJECTION [--dry-run]``: rebuild a projection from its topics.

1. **Plan** (the first line printed): the processor's source topics, their partitions
   and offset ranges, its consumer group, and what is rebuilt. The group must be idle:
   stop the processor's workers first.
2. **Reset**: the group goes back to the beginning of its source topics. Insights
   rebuilds into fresh ``<table>__replay`` tables while the live ones keep answering
   queries, and swaps them in with ``EXCHANGE TABLES`` at the end
   (:mod:`projections.rebuild`); the other processors' Faust tables are emptied (their
   changelogs truncated with Kafka's DeleteRecords, their local stores removed) and
   rebuilt as the worker reads.
3. **Run**: the worker runs with ``HOOKSTREAM_REPLAY=1`` (effects off: no HTTP dispatch,
   no GitHub call, no re-emitted dispatch) until its committed offsets reach the ends the
   topics had when the replay began. Progress goes to stderr: a bar with events/s and ETA
   on a terminal, a plain line every few seconds otherwise.
4. **Stall**: partitions with lag whose committed offset does not move for
   ``HOOKSTREAM_REPLAY_STALL_S`` fail the replay, named with their lag.

An interrupted insights replay resumes: its plan is kept in
``$HOOKSTREAM_DATA_DIR/replay/insights.json`` until the swap, and the next
``hookstream replay insights`` continues from the group's committed offsets into the
``__replay`` tables it had filled.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from deploy.commands import hookstream_argv
from processors.offsets import OffsetReader, PartitionOffsets, split_partition_name
from processors.records import CHANGELOG_CONFIGS
from projections.rebuild import SUFFIX, fact_tables
from schemas.errors import HookstreamError
from schemas.settings import Settings
from schemas.topics import ensure_topics, topic_specs

IDLE_GROUP_STATES = ("Empty", "Dead", "")
PLAIN_EVERY_S = 5.0


class ReplayError(HookstreamError):
    pass


def source_topics(settings: Settings, processor: str) -> list[str]:
    """The topics a processor's worker reads from the outside (not its internal ones)."""
    by_processor = {
        "insights": [settings.events_topic, settings.identity_topic],
        "triggers": [settings.events_topic, settings.dispatch_topic],
        "checks": [settings.events_topic, settings.dispatch_topic, settings.run_status_topic],
        "identity": [settings.events_topic, settings.identity_topic],
    }
    return by_processor[processor]


@dataclass(frozen=True)
class Range:
    partition: str  # "topic/partition"
    begin: int
    end: int

    @property
    def records(self) -> int:
        return max(0, self.end - self.begin)


@dataclass(frozen=True)
class ReplayPlan:
    processor: str
    group: str
    ranges: tuple[Range, ...]
    rebuilt: tuple[str, ...]  # ClickHouse tables (insights) or Faust changelog topics
    resumed: bool = False

    @property
    def records(self) -> int:
        return sum(r.records for r in self.ranges)

    @property
    def horizon(self) -> dict[str, int]:
        return {r.partition: r.end for r in self.ranges}

    def describe(self) -> str:
        """The first line of a replay: what will happen."""
        topics: dict[str, list[Range]] = {}
        for r in self.ranges:
            topics.setdefault(split_partition_name(r.partition)[0], []).append(r)
        parts = [
            f"{topic} [" + ", ".join(
                f"{split_partition_name(r.partition)[1]}:{r.begin}..{r.end}" for r in ranges
            ) + "]"
            for topic, ranges in topics.items()
        ]  # fmt: skip
        if self.processor == "insights":
            what = f"tables {', '.join(self.rebuilt)} rebuilt as <table>{SUFFIX}, then swapped in"
        else:
            what = f"Faust tables rebuilt ({', '.join(self.rebuilt) or 'none'})"
        verb = "resume replay" if self.resumed else "replay"
        return (
            f"{verb} {self.processor}: {self.records:,} records of {'; '.join(parts)} "
            f"with consumer group {self.group}; {what}; effects off"
        )

    def to_json(self) -> bytes:
        return orjson.dumps({"processor": self.processor, "group": self.group,
                             "ranges": [asdict(r) for r in self.ranges],
                             "rebuilt": list(self.rebuilt)})  # fmt: skip

    @classmethod
    def from_json(cls, raw: bytes) -> ReplayPlan:
        doc = orjson.loads(raw)
        return cls(doc["processor"], doc["group"], tuple(Range(**r) for r in doc["ranges"]),
                   tuple(doc["rebuilt"]), resumed=True)  # fmt: skip


# --- progress and stalls: pure ------------------------------------------------------------
@dataclass
class Progress:
    """Where a replay is, from its group's committed offsets over time."""

    plan: ReplayPlan
    stall_s: float
    started: float
    # A worker starting up (joining its group, recovering tables) reads nothing for a
    # while: until the first progress, a stall must last this much longer.
    start_grace_s: float = 60.0
    first_done: int | None = None
    done: int = 0
    rate: float = 0.0
    _last: dict[str, tuple[int, float]] = field(default_factory=dict)

    def update(self, offsets: list[PartitionOffsets], now: float) -> list[tuple[str, int, float]]:
        """Record a reading; returns the stalled partitions: (name, lag, seconds still)."""
        ranges = {r.partition: r for r in self.plan.ranges}
        progressed = self.first_done is not None and self.done > self.first_done
        limit = self.stall_s if progressed else self.stall_s + self.start_grace_s
        done = 0
        stalled = []
        for o in offsets:
            r = ranges[o.name]
            committed = max(
                r.begin, min(o.committed if o.committed is not None else r.begin, r.end)
            )
            done += committed - r.begin
            last_offset, since = self._last.get(o.name, (-1, now))
            if committed != last_offset:
                self._last[o.name] = (committed, now)
            elif committed < r.end and now - since >= limit:
                stalled.append((o.name, r.end - committed, now - since))
        if self.first_done is None:
            self.first_done = done
        elapsed = now - self.started
        self.rate = (done - self.first_done) / elapsed if elapsed > 0 else 0.0
        self.done = done
        return stalled

    @property
    def eta_s(self) -> float | None:
        remaining = self.plan.records - self.done
        return remaining / self.rate if self.rate > 0 else None

    def line(self, width: int = 30) -> str:
        total = self.plan.records or 1
        fraction = min(1.0, self.done / total)
        bar = "#" * int(fraction * width) + "." * (width - int(fraction * width))
        eta = self.eta_s
        eta_text = "--:--" if eta is None else time.strftime("%H:%M:%S", time.gmtime(eta))
        return (f"[{bar}] {fraction:6.1%} {self.done:,}/{self.plan.records:,} records "
                f"{self.rate:,.0f}/s ETA {eta_text}")  # fmt: skip


def stalled_message(plan: ReplayPlan, stalled: list[tuple[str, int, float]]) -> str:
    named = ", ".join(f"{name} (lag {lag:,}, no progress for {still:.0f} s)"
                      for name, lag, still in stalled)  # fmt: skip
    return (
        f"replay of {plan.processor} is stuck: {named}. The worker's log and its "
        f"hookstream_worker_* metrics say more; run `hookstream replay {plan.processor}` "
        "again to resume"
    )


# --- Kafka and the worker: I/O ---------------------------------------------------------------
async def _group_state(admin: AIOKafkaAdminClient, group: str) -> tuple[str, int]:
    deadline = time.monotonic() + 60
    while True:
        try:
            [response] = await admin.describe_consumer_groups([group])
            break
        except KafkaError as exc:
            # A new broker creates its offsets topic on first use and elects the group's
            # coordinator meanwhile: worth waiting for, not worth failing on.
            if not exc.retriable or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    _error, _group, state, _ptype, _protocol, members, *_ = response.groups[0]
    return str(state), len(members)


async def group_state(settings: Settings, group: str) -> tuple[str, int]:
    """The group's state (``Empty``, ``Stable``…) and how many members it has."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        return await _group_state(admin, group)
    finally:
        await admin.close()


async def _require_idle(settings: Settings, group: str) -> None:
    state, members = await group_state(settings, group)
    if state not in IDLE_GROUP_STATES:
        raise ReplayError(
            f"consumer group {group} is {state} with {members} member(s): "
            "stop its workers before replaying (a worker that crashed leaves the group "
            f"after HOOKSTREAM_KAFKA_SESSION_TIMEOUT_S, {settings.kafka_session_timeout_s:g} s)"
        )


async def _changelogs(settings: Settings, group: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        topics = await admin.list_topics()
    finally:
        await admin.close()
    return sorted(t for t in topics if t.startswith(f"{group}-") and t.endswith("-changelog"))


async def make_plan(settings: Settings, processor: str) -> ReplayPlan:
    group = settings.app_id(processor)
    await _require_idle(settings, group)
    await ensure_topics(settings.kafka_bootstrap, topic_specs(settings))
    async with OffsetReader(settings.kafka_bootstrap) as reader:
        partitions = await reader.partitions(source_topics(settings, processor))
        ends = {o.name: o.end for o in await reader.read(group, partitions)}
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        begins = await consumer.beginning_offsets(partitions)
    finally:
        await consumer.stop()
    names = {tp: f"{tp.topic}/{tp.partition}" for tp in partitions}
    ranges = tuple(Range(names[tp], begins[tp], ends[names[tp]]) for tp in partitions)
    rebuilt = fact_tables() if processor == "insights" else await _changelogs(settings, group)
    return ReplayPlan(processor, group, ranges, tuple(rebuilt))


async def reset(settings: Settings, plan: ReplayPlan) -> None:
    """Move the group to the beginnings; empty the Faust tables the replay rebuilds."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=plan.group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(*split_partition_name(r.partition)) for r in plan.ranges]
        consumer.assign(partitions)
        await consumer.commit({tp: r.begin for tp, r in zip(partitions, plan.ranges, strict=True)})
        # aiokafka's stop() cancels and awaits a background task that assign() created; one
        # cancelled before its first step raises CancelledError there: let it start.
        await asyncio.sleep(0)
    finally:
        await consumer.stop()
    if plan.processor == "insights":
        return
    if plan.rebuilt:
        async with OffsetReader(settings.kafka_bootstrap) as reader:
            changelogs = await reader.partitions(plan.rebuilt)
            read = await reader.read(plan.group, changelogs)
            ends = {tp: o.end for tp, o in zip(changelogs, read, strict=True)}
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            # Kafka's DeleteRecords: the changelogs now start at their ends, so the
            # worker recovers empty tables and rebuilds them from the sources. Kafka
            # refuses it on a compact-only topic; changelogs made before hookstream
            # created them "compact,delete" (retention -1: nothing expires) get that first.
            await admin.alter_configs([
                ConfigResource(ConfigResourceType.TOPIC, topic, CHANGELOG_CONFIGS)
                for topic in plan.rebuilt
            ])  # fmt: skip
            await admin.delete_records(
                {tp: RecordsToDelete(end) for tp, end in ends.items()}, timeout_ms=30_000
            )
        finally:
            await admin.close()
    shutil.rmtree(settings.data_dir / "faust" / plan.processor, ignore_errors=True)


def _state_file(settings: Settings, processor: str) -> Path:
    return settings.data_dir / "replay" / f"{processor}.json"


def _read_offsets(settings: Settings, plan: ReplayPlan) -> list[PartitionOffsets]:
    async def read() -> list[PartitionOffsets]:
        async with OffsetReader(settings.kafka_bootstrap) as reader:
            tps = [TopicPartition(*split_partition_name(r.partition)) for r in plan.ranges]
            return await reader.read(plan.group, tps)

    return asyncio.run(read())


class _Reporter:
    """A bar on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last_plain = 0.0

    def show(self, progress: Progress, now: float, final: bool = False) -> None:
        if self.tty:
            self.stream.write("\r" + progress.line() + ("\n" if final else ""))
            self.stream.flush()
        elif final or now - self.last_plain >= PLAIN_EVERY_S:
            self.stream.write(progress.line() + "\n")
            self.stream.flush()
            self.last_plain = now


def replay(
    settings: Settings,
    processor: str,
    dry_run: bool = False,
    out: Callable[[str], None] = print,
    timeout_s: float = 24 * 3600.0,
) -> ReplayPlan:
    """Plan, reset, and run the processor's worker in replay mode until it is done."""
    state = _state_file(settings, processor)
    marker = settings.data_dir / "replay" / f"{processor}.swapped"
    if marker.exists():  # interrupted after the swap: nothing is left to do
        state.unlink(missing_ok=True)
        marker.unlink()
        out(f"replay of {processor} done: the rebuilt tables were swapped in before")
        return ReplayPlan(processor, settings.app_id(processor), (), ())
    if processor == "insights" and state.exists():
        plan = ReplayPlan.from_json(state.read_bytes())
        asyncio.run(_require_idle(settings, plan.group))
    else:
        plan = asyncio.run(make_plan(settings, processor))
    out(plan.describe())
    if dry_run:
        return plan
    if not plan.resumed:
        asyncio.run(reset(settings, plan))
    env = dict(os.environ, HOOKSTREAM_REPLAY="1")
    if processor == "insights":
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_bytes(plan.to_json())
        marker.unlink(missing_ok=True)
        env |= {
            "HOOKSTREAM_REPLAY_HORIZON": orjson.dumps(plan.horizon).decode(),
            "HOOKSTREAM_REPLAY_FRESH": "0" if plan.resumed else "1",
            "HOOKSTREAM_REPLAY_MARKER": str(marker),
        }
    worker = subprocess.Popen(hookstream_argv("worker", processor), env=env)
    progress = Progress(plan, settings.replay_stall_s, time.monotonic())
    reporter = _Reporter(sys.stderr)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if worker.poll() is not None:
                raise ReplayError(f"the {processor} worker exited with {worker.returncode}")
            now = time.monotonic()
            stalled = progress.update(_read_offsets(settings, plan), now)
            reporter.show(progress, now)
            finished = progress.done >= plan.records
            if finished and (processor != "insights" or marker.exists()):
                break
            if stalled:
                raise ReplayError(stalled_message(plan, stalled))
            if now > deadline:
                raise ReplayError(f"replay did not finish within {timeout_s:g} s")
            time.sleep(1.0)
        reporter.show(progress, time.monotonic(), final=True)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.send_signal(signal.SIGCONT)  # a stopped (hung, traced) worker acts on it
            try:
                worker.wait(timeout=90)
            except subprocess.TimeoutExpired:
                worker.kill()
    state.unlink(missing_ok=True)
    marker.unlink(missing_ok=True)
    out(f"replay of {processor} done: {plan.records:,} records read"
        + ("; the rebuilt tables are live" if processor == "insights" else ""))  # fmt: skip
    return plan


# --- for the tests and benchmarks: where a group stands --------------------------------------
@dataclass(frozen=True)
class Horizon:
    group: str
    end: dict[TopicPartition, int]

    @property
    def records(self) -> int:
        return sum(self.end.values())


async def log_end(settings: Settings, group: str) -> Horizon:
    """Where the event log ends now, as a horizon for ``group`` to reach."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.events_topic, p) for p in range(settings.events_partitions)]
        return Horizon(group, await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def caught_up(settings: Settings, horizon: Horizon) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(
            horizon.group, partitions=list(horizon.end)
        )
    except KafkaError as exc:
        if exc.retriable:  # e.g. the coordinator of a brand-new broker is still loading
            return False
        raise
    finally:
        await admin.close()
    return all(
        end == 0 or (tp in committed and committed[tp].offset >= end)
        for tp, end in horizon.end.items()
    )

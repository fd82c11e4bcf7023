"""The insights worker: a Faust app of its own (``hookstream worker insights``).

Two agents, each a short loop: ``project-identity`` writes every ``hookstream.identity``
record into ``identities`` (:mod:`processors.insights.identity_rows`), and
``project-deliveries`` turns each ``github.events`` record into rows with
:func:`insight_rows` and hands them to the :class:`Batcher`, which writes a batch when it
holds ``HOOKSTREAM_SINK_BATCH_ROWS`` records or ``HOOKSTREAM_SINK_FLUSH_S`` has passed, and
only then acknowledges the records (their offsets become committable). A record that
cannot be projected goes to ``github.events.dlq`` with its error; the stream goes on.

``github.events`` records skip Faust's per-record streams: they come as fetched, a
partition's list at a time (:func:`processors.kafka_transport.take_in_bulk`), into
:func:`_project_bulk`, which does for each record what the agent does for one. The
ClickHouse client lives in a process of its own (``ClickHouseSink(own_process=True)``),
so the inserts' serialization does not compete with this process's parsing.

The worker also serves read-only SQL and the insights page (see :mod:`projections.query`
and :mod:`projections.insights_page`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from aiohttp import web
from aiokafka import TopicPartition
from faust.streams import Stream
from faust.types import TP, EventT, Message, StreamT
from mode import Service

from processors.dead_letter import park
from processors.insights.identity_rows import TABLE as IDENTITY_TABLE
from processors.insights.identity_rows import identity_row
from processors.insights.rows import InsightRows, insight_rows
from processors.kafka_transport import Consumer, take_in_bulk
from processors.offsets import OffsetReader, reached, split_partition_name
from processors.records import delivery_envelope, processor_app, raw_topic, record_headers
from projections.insights_page import insights_app
from projections.insights_report import Patterns
from projections.sink import ClickHouseSink
from schemas.identity import parse_identity_event
from schemas.settings import Settings
from schemas.topics import retry_topic

log = logging.getLogger("hookstream.insights")

PROCESSOR = "insights"
WRITE_ATTEMPTS = 8


def create_app(settings: Settings) -> faust.App:
    app = processor_app(settings, PROCESSOR)
    # The event log and its retry topic (`hookstream dlq retry`), read alike.
    events = raw_topic(app, settings.events_topic, retry_topic(settings.events_topic, PROCESSOR))
    dlq = raw_topic(app, settings.dlq_topic)
    sink = ClickHouseSink(
        settings.dsn, settings.production_pattern, settings.incident_pattern, own_process=True
    )

    batcher = Batcher(sink, settings.sink_batch_rows)
    identity = raw_topic(app, settings.identity_topic)
    identity_dlq = raw_topic(app, settings.identity_dlq_topic)
    identity_batcher = Batcher(sink, settings.sink_batch_rows)

    @app.agent(events, name="project-deliveries")
    async def project(stream: StreamT[bytes]) -> None:
        # Receives nothing while the records come in bulk (below); it makes Faust
        # subscribe to the topics, and would project a record that came this way alike.
        await _project(stream, batcher, dlq, _delivery_rows)

    take_in_bulk(app, events.topics, functools.partial(_project_bulk, batcher=batcher, dlq=dlq))

    @app.agent(identity, name="project-identity")
    async def project_identity(stream: StreamT[bytes]) -> None:
        await _project(stream, identity_batcher, identity_dlq, _identity_rows)

    app.add_dependency(_SinkService(sink, settings, [batcher, identity_batcher]))
    return app


def _delivery_rows(message: Message) -> InsightRows:
    return insight_rows(delivery_envelope(message))


def _identity_rows(message: Message) -> InsightRows:
    rows = InsightRows()
    rows.add(
        IDENTITY_TABLE, identity_row(parse_identity_event(message.value or b""), message.offset)
    )
    return rows


async def _project(
    stream: StreamT[bytes],
    batcher: Batcher,
    dlq: faust.TopicT,
    rows_of: Callable[[Message], InsightRows],
) -> None:
    """Rows of each record into the batcher; a record we cannot project is parked."""
    manual = cast("Stream[bytes]", stream).noack()
    batcher.ack = manual.ack
    async for event in manual.events():
        message = event.message
        try:
            rows = rows_of(message)
        except Exception as exc:  # any record we cannot project: park it, go on
            headers = record_headers(message.headers)
            await park(dlq, message, headers, processor=PROCESSOR, error=exc)
            rows = InsightRows()
        await batcher.add(event, rows)


async def _project_bulk(
    consumer: Consumer, tp: TP, records: list[Any], *, batcher: Batcher, dlq: faust.TopicT
) -> None:
    """What :func:`_project` does, for a partition's fetched records at once."""
    rows = InsightRows()
    for record in records:
        try:
            rows.extend(insight_rows(delivery_envelope(record)))
        except Exception as exc:  # any record we cannot project: park it, go on
            message = consumer.to_message(tp, record)
            headers = record_headers(message.headers)
            await park(dlq, message, headers, processor=PROCESSOR, error=exc)
    await batcher.add_bulk(consumer.ack_offsets, tp, [r.offset for r in records], rows)


@dataclass
class _Batch:
    rows: InsightRows = field(default_factory=InsightRows)
    events: list[EventT[bytes]] = field(default_factory=list)  # from an agent
    offsets: dict[TP, list[int]] = field(default_factory=dict)  # taken in bulk
    count: int = 0
    first: tuple[TP, int] | None = None
    last: tuple[TP, int] | None = None
    # Rows sent ahead to the engine process (ClickHouseSink.stage), one future a chunk.
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    staged: list[asyncio.Future[None]] = field(default_factory=list)

    def note(self, tp: TP, first: int, last: int, count: int) -> None:
        self.first = self.first or (tp, first)
        self.last = (tp, last)
        self.count += count

    @property
    def id(self) -> str:
        assert self.first is not None
        assert self.last is not None
        (first_tp, first), (last_tp, last) = self.first, self.last
        return f"{first_tp}@{first}..{last_tp}@{last}:{self.count}"


class Batcher:
    """Collects rows into batches and writes them while the next batch is being built.

    At most one write is in flight; a batch's records are acknowledged (their offsets
    become committable) only after its rows are written, and batches complete in order.
    Records come from an agent (:meth:`add`) or in bulk (:meth:`add_bulk`).
    """

    def __init__(self, sink: ClickHouseSink, max_rows: int) -> None:
        self.sink = sink
        self.max_rows = max_rows
        self.ack: Callable[[EventT[bytes]], Awaitable[bool]] | None = None
        self.ack_offsets: Callable[[TP, Sequence[int]], None] | None = None
        self.batch = _Batch()
        self._writing: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def add(self, event: EventT[bytes], rows: InsightRows) -> None:
        self.batch.rows.extend(rows)
        self.batch.events.append(event)
        message = event.message
        self.batch.note(message.tp, message.offset, message.offset, 1)
        if self.batch.count >= self.max_rows:
            await self.flush()

    async def add_bulk(
        self,
        ack: Callable[[TP, Sequence[int]], None],
        tp: TP,
        offsets: list[int],
        rows: InsightRows,
    ) -> None:
        self.ack_offsets = ack
        self.batch.rows.extend(rows)
        staging = self.sink.stage(self.batch.key, rows.tables)
        if staging is not None:
            self.batch.staged.append(staging)
        self.batch.offsets.setdefault(tp, []).extend(offsets)
        self.batch.note(tp, offsets[0], offsets[-1], len(offsets))
        if self.batch.count >= self.max_rows:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            if not self.batch.count:
                return
            batch, self.batch = self.batch, _Batch()
            # The batch is handed to its write at once, so a caller cancelled while it
            # waits below (the fetch loop, in a rebalance) loses nothing; the write
            # itself waits for the previous one: batches in order, one write in flight.
            previous = self._writing
            self._writing = asyncio.create_task(self._write_then_ack(previous, batch))
            if previous is not None:
                await asyncio.wait([previous])

    async def _write_then_ack(self, previous: asyncio.Task[None] | None, batch: _Batch) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        written = False
        if batch.staged:
            # Rows an agent added were not staged: such a batch is written whole.
            written = not batch.events and await self._write_staged(batch)
            if not written:
                with contextlib.suppress(Exception):
                    await self.sink.drop_staged(batch.key)
        if not written:
            await write(self.sink, batch.rows, batch.id)
        for event in batch.events:
            assert self.ack is not None
            await self.ack(event)
        for tp, offsets in batch.offsets.items():
            assert self.ack_offsets is not None
            self.ack_offsets(tp, offsets)

    async def _write_staged(self, batch: _Batch) -> bool:
        """Write the rows the engine holds already; False if the batch must be written whole."""
        staging = await asyncio.gather(*batch.staged, return_exceptions=True)
        failed = next((e for e in staging if isinstance(e, BaseException)), None)
        try:
            if failed is not None:
                raise failed
            await self.sink.write_staged(batch.key, len(batch.staged), batch.id)
        except Exception as exc:
            log.warning("the staged write of %s failed (%s); writing it whole", batch.id, exc)
            return False
        return True


async def write(sink: ClickHouseSink, rows: InsightRows, batch_id: str) -> None:
    """Write a batch, retrying; if ClickHouse stays away, exit without acknowledging."""
    delay = 0.5
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            await sink.write(rows.tables, batch_id)
            return
        except Exception as exc:
            if attempt == WRITE_ATTEMPTS:
                log.critical("ClickHouse write failed %d times (%s); exiting", attempt, exc)
                # Exit hard: a clean stop would acknowledge the batch that was not written.
                os._exit(70)
            log.warning("ClickHouse write failed (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 15.0)


class _SinkService(Service):
    """Opens the sink (migrations, views) and serves read-only SQL and the insights page."""

    def __init__(self, sink: ClickHouseSink, settings: Settings, batchers: list[Batcher]) -> None:
        super().__init__()
        self.sink = sink
        self.settings = settings
        self.batchers = batchers
        self.runner: web.AppRunner | None = None
        self.flusher: asyncio.Task[None] | None = None
        self.swapper: asyncio.Task[None] | None = None

    async def _swap_at_horizon(self) -> None:
        """Swap the rebuilt tables in once the group's committed offsets reach the horizon.

        Offsets are committed only after their rows are written, so reaching the horizon
        means every row of the records before it is in the ``__replay`` tables.
        """
        horizon = self.settings.replay_horizon or {}
        group = self.settings.app_id(PROCESSOR)
        async with OffsetReader(self.settings.kafka_bootstrap) as reader:
            partitions = [TopicPartition(*split_partition_name(name)) for name in horizon]
            while True:  # the broker has no way to tell us: ask it every second
                if reached(await reader.read(group, partitions), horizon):
                    break
                await asyncio.sleep(1.0)
        await self.sink.swap_in()
        log.info("replay: the rebuilt tables are live (swapped with EXCHANGE TABLES)")
        if self.settings.replay_marker is not None:
            self.settings.replay_marker.write_text("swapped\n")

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sink_flush_s)
            for batcher in self.batchers:
                await batcher.flush()

    async def on_start(self) -> None:
        await self.sink.start()
        if self.settings.replay and self.settings.replay_horizon is not None:
            await self.sink.rebuild_beside(fresh=self.settings.replay_fresh)
            self.swapper = asyncio.create_task(self._swap_at_horizon(), name="replay-swap")
        self.flusher = asyncio.create_task(self._flush_periodically(), name="sink-flush")
        # Served in server mode too: the insights page reads through the same path.
        patterns = Patterns(self.settings.production_pattern, self.settings.incident_pattern)
        self.runner = web.AppRunner(insights_app(self.sink.run, patterns), access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.settings.query_port).start()
        port = self.settings.query_port
        log.info("read-only SQL on http://127.0.0.1:%d/query, insights page on /insights", port)

    async def on_stop(self) -> None:
        for task in (self.flusher, self.swapper):
            if task is not None:
                task.cancel()
        if self.runner is not None:
            await self.runner.cleanup()
        self.sink.close()

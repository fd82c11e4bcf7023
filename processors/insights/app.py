"""The insights worker: a Faust app of its own (``hookstream worker insights``).

Two agents, each a short loop: ``project-identity`` writes every ``hookstream.identity``
record into ``identities`` (:mod:`processors.insights.identity_rows`), and
``project-deliveries`` turns each ``github.events`` record into rows with
:func:`insight_rows` and hands them to the :class:`Batcher`, which writes a batch when it
holds ``HOOKSTREAM_SINK_BATCH_ROWS`` records or ``HOOKSTREAM_SINK_FLUSH_S`` has passed, and
only then acknowledges the records (their offsets become committable). A record that
cannot be projected goes to ``github.events.dlq`` with its error; the stream goes on.

The worker also serves read-only SQL and the insights page (see :mod:`projections.query`
and :mod:`projections.insights_page`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import cast

import faust
from aiohttp import web
from aiokafka import TopicPartition
from faust.streams import Stream
from faust.types import EventT, Message, StreamT
from mode import Service

from processors.dead_letter import park
from processors.insights.identity_rows import TABLE as IDENTITY_TABLE
from processors.insights.identity_rows import identity_row
from processors.insights.rows import InsightRows, insight_rows
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
    sink = ClickHouseSink(settings.dsn, settings.production_pattern, settings.incident_pattern)

    batcher = Batcher(sink, settings.sink_batch_rows)
    identity = raw_topic(app, settings.identity_topic)
    identity_dlq = raw_topic(app, settings.identity_dlq_topic)
    identity_batcher = Batcher(sink, settings.sink_batch_rows)

    @app.agent(events, name="project-deliveries")
    async def project(stream: StreamT[bytes]) -> None:
        await _project(stream, batcher, dlq, _delivery_rows)

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


class Batcher:
    """Collects rows into batches and writes them while the next batch is being built.

    At most one write is in flight; a batch's records are acknowledged (their offsets
    become committable) only after its rows are written, and batches complete in order.
    """

    def __init__(self, sink: ClickHouseSink, max_rows: int) -> None:
        self.sink = sink
        self.max_rows = max_rows
        self.ack: Callable[[EventT[bytes]], Awaitable[bool]] | None = None
        self.rows = InsightRows()
        self.events: list[EventT[bytes]] = []
        self._writing: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def add(self, event: EventT[bytes], rows: InsightRows) -> None:
        self.rows.extend(rows)
        self.events.append(event)
        if len(self.events) >= self.max_rows:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            if not self.events:
                return
            rows, events = self.rows, self.events
            self.rows, self.events = InsightRows(), []
            if self._writing is not None:
                await self._writing  # keep batches in order, one write in flight
            first, last = events[0].message, events[-1].message
            batch_id = f"{first.tp}@{first.offset}..{last.tp}@{last.offset}:{len(events)}"
            self._writing = asyncio.create_task(self._write_then_ack(rows, events, batch_id))

    async def _write_then_ack(
        self, rows: InsightRows, events: list[EventT[bytes]], batch_id: str
    ) -> None:
        await write(self.sink, rows, batch_id)
        assert self.ack is not None
        for event in events:
            await self.ack(event)


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

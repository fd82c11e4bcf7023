"""The insights worker: a Faust app of its own (``hookstream worker insights``).

One agent, a short loop: take a batch of ``github.events`` records (up to
``HOOKSTREAM_SINK_BATCH_ROWS`` or ``HOOKSTREAM_SINK_FLUSH_S``), turn each into rows with
:func:`insight_rows`, write the batch through the sink, and only then let Faust
acknowledge the records (their offsets become committable). A record that cannot be
projected goes to ``github.events.dlq`` with its error; the batch goes on.

In embedded mode the worker also serves read-only SQL (see :mod:`projections.query`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import cast

import faust
from aiohttp import web
from faust.streams import Stream
from faust.types import StreamT
from mode import Service

from processors.dead_letter import dead_letter_headers
from processors.insights.rows import InsightRows, insight_rows
from processors.records import raw_topic, record_headers
from projections.query import query_app
from projections.sink import ClickHouseSink
from schemas.envelope import Envelope
from schemas.settings import Settings

log = logging.getLogger("hookstream.insights")

PROCESSOR = "insights"
WRITE_ATTEMPTS = 8


def create_app(settings: Settings) -> faust.App:
    datadir = settings.data_dir / "faust" / PROCESSOR
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id(PROCESSOR),
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_partitions=settings.events_partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )
    events = raw_topic(app, settings.events_topic)
    dlq = raw_topic(app, settings.dlq_topic)
    sink = ClickHouseSink(settings.dsn, settings.production_pattern, settings.incident_pattern)

    @app.agent(events, name="project-deliveries")
    async def project(stream: StreamT[bytes]) -> None:
        batches = cast("Stream[bytes]", stream).take_events(
            settings.sink_batch_rows, settings.sink_flush_s
        )
        async for batch in batches:
            rows = InsightRows()
            for event in batch:
                message = event.message
                headers = record_headers(message.headers)
                try:
                    envelope = Envelope.from_record(headers, message.value or b"", key=message.key)
                    rows.extend(insight_rows(envelope))
                except Exception as exc:  # any record we cannot project: park it, go on
                    log.warning("dead-lettering %s@%d: %s", message.tp, message.offset, exc)
                    await (
                        await dlq.send(
                            key=message.key,
                            value=message.value,
                            headers=dead_letter_headers(
                                headers, processor=PROCESSOR, error=exc,
                                source=f"{message.topic}/{message.partition}/{message.offset}",
                            ),
                            force=True,
                        )
                    )  # fmt: skip
            first, last = batch[0].message, batch[-1].message
            await write(sink, rows, f"{first.tp}@{first.offset}..{last.tp}@{last.offset}")
            # Leaving this iteration acknowledges the batch: offsets follow the rows.

    app.add_dependency(_SinkService(sink, settings))
    return app


async def write(sink: ClickHouseSink, rows: InsightRows, batch_id: str) -> None:
    """Write a batch, retrying; if ClickHouse stays away, exit without acknowledging."""
    delay = 0.5
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            await sink.write(rows, batch_id)
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
    """Opens the sink (migrations, views) and, embedded, serves read-only SQL."""

    def __init__(self, sink: ClickHouseSink, settings: Settings) -> None:
        super().__init__()
        self.sink = sink
        self.settings = settings
        self.runner: web.AppRunner | None = None

    async def on_start(self) -> None:
        await self.sink.start()
        if self.settings.embedded:
            self.runner = web.AppRunner(query_app(self.sink.run), access_log=None)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.settings.query_port).start()
            log.info("read-only SQL on http://127.0.0.1:%d/query", self.settings.query_port)

    async def on_stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        self.sink.close()

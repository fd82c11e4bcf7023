"""The watchdog: is each partition this worker owns making progress?

It also serves the worker's ``GET /metrics``: its own gauges and those the processor
registers in the same registry.

Every ``HOOKSTREAM_WATCHDOG_INTERVAL_S`` the worker reads, for the partitions assigned to
it, the group's committed offset and the log end from the broker
(:mod:`processors.offsets`), exports them as Prometheus gauges with the seconds since
the partition last made progress, and logs a warning when a partition has lag but its
committed offset has not moved for ``HOOKSTREAM_STALL_WARNING_S``. Progress means the
committed offset moved, or there is nothing to read (transaction markers left aside:
:meth:`processors.offsets.OffsetReader.readable`).

The decision is :func:`observe`, a pure function; :class:`Watchdog` is the thin service
that feeds it offsets and carries its verdicts to the log and the metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import faust
from aiohttp import web
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from faust.exceptions import ConsumerNotStarted
from faust.types import TP
from mode import Service
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from processors.offsets import OffsetReader, PartitionOffsets
from schemas.settings import Settings

log = logging.getLogger("hookstream.watchdog")


@dataclass(frozen=True, slots=True)
class Progress:
    """What the watchdog remembers of one partition between two looks."""

    committed: int | None
    end: int
    progressed_at: float  # monotonic seconds
    warned: bool = False  # a warning was logged for the current stall


@dataclass(frozen=True, slots=True)
class Verdict:
    progress: Progress
    stalled_s: float  # seconds without progress while there was something to read
    warn: bool  # log a warning now (once per stall)


def observe(
    previous: Progress | None, offsets: PartitionOffsets, now: float, warn_after_s: float
) -> Verdict:
    """Fold one look at a partition's offsets into its progress."""
    if previous is None or offsets.committed != previous.committed or offsets.lag == 0:
        return Verdict(Progress(offsets.committed, offsets.end, now), 0.0, False)
    stalled_s = now - previous.progressed_at
    warn = stalled_s >= warn_after_s and not previous.warned
    progress = Progress(
        previous.committed, offsets.end, previous.progressed_at, previous.warned or warn
    )
    return Verdict(progress, stalled_s, warn)


def source_partitions(app: faust.App, tps: Iterable[TP]) -> list[TP]:
    """The partitions of the topics a processor reads, without Faust's own topics.

    Faust also assigns its table changelogs and its ``<app id>-__assignor-__leader``
    topic; their offsets are not the processor's progress.
    """
    internal = f"{app.conf.id}-"
    return sorted(
        tp for tp in tps if tp.topic not in app.tables.changelog_topics
        and not tp.topic.startswith(internal)
    )  # fmt: skip


class WatchdogMetrics:
    """Per-partition offsets and progress, in the worker's Prometheus registry."""

    def __init__(self, processor: str, registry: CollectorRegistry) -> None:
        self.processor = processor
        self.registry = registry
        labels = ("processor", "topic", "partition")
        self.committed = Gauge(
            "hookstream_worker_committed_offset",
            "The group's committed offset on a partition this worker owns (-1: none yet).",
            labels, registry=self.registry,
        )  # fmt: skip
        self.end = Gauge(
            "hookstream_worker_log_end_offset",
            "The offset the partition's next record will get.",
            labels, registry=self.registry,
        )  # fmt: skip
        self.lag = Gauge(
            "hookstream_worker_lag",
            "Records between the committed offset and the log end.",
            labels, registry=self.registry,
        )  # fmt: skip
        self.stalled = Gauge(
            "hookstream_worker_seconds_without_progress",
            "Seconds the partition has had lag while its committed offset did not move.",
            labels, registry=self.registry,
        )  # fmt: skip

    def record(self, offsets: PartitionOffsets, stalled_s: float) -> None:
        labels = (self.processor, offsets.topic, str(offsets.partition))
        self.committed.labels(*labels).set(-1 if offsets.committed is None else offsets.committed)
        self.end.labels(*labels).set(offsets.end)
        self.lag.labels(*labels).set(offsets.lag)
        self.stalled.labels(*labels).set(round(stalled_s, 3))

    def forget(self, offsets: PartitionOffsets) -> None:
        labels = (self.processor, offsets.topic, str(offsets.partition))
        for gauge in (self.committed, self.end, self.lag, self.stalled):
            gauge.remove(*labels)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Watchdog(Service):
    """Looks at the worker's partitions periodically and serves ``GET /metrics``."""

    def __init__(
        self, app: faust.App, settings: Settings, processor: str, registry: CollectorRegistry
    ) -> None:
        super().__init__()
        self.app = app
        self.settings = settings
        self.group = settings.app_id(processor)
        self.metrics = WatchdogMetrics(processor, registry)
        self.port = settings.worker_metrics_port_for(processor)
        self._progress: dict[TopicPartition, Progress] = {}
        self._last: dict[TopicPartition, PartitionOffsets] = {}
        self._runner: web.AppRunner | None = None

    def owned_partitions(self) -> set[TopicPartition]:
        try:
            assigned = self.app.consumer.assignment()
        except ConsumerNotStarted:  # a slow start: nothing is owned yet
            return set()
        return {
            TopicPartition(tp.topic, tp.partition) for tp in source_partitions(self.app, assigned)
        }

    def unmoved(self, offsets: PartitionOffsets) -> bool:
        """Whether the partition has lag and the same committed offset as at the last look."""
        previous = self._progress.get(TopicPartition(offsets.topic, offsets.partition))
        return offsets.lag > 0 and previous is not None and previous.committed == offsets.committed

    def look(self, offsets: list[PartitionOffsets], now: float) -> None:
        seen = set()
        for current in offsets:
            tp = TopicPartition(current.topic, current.partition)
            seen.add(tp)
            verdict = observe(self._progress.get(tp), current, now, self.settings.stall_warning_s)
            self._progress[tp] = verdict.progress
            self._last[tp] = current
            self.metrics.record(current, verdict.stalled_s)
            if verdict.warn:
                log.warning(
                    "partition %s has lag %d but its committed offset %s has not moved "
                    "for %.0f s",
                    current.name, current.lag, current.committed, verdict.stalled_s,
                    extra={"fields": {"partition": current.name, "lag": current.lag,
                                      "committed": current.committed, "log_end": current.end,
                                      "stalled_s": round(verdict.stalled_s, 1)}},
                )  # fmt: skip
        for tp in set(self._progress) - seen:  # revoked: its series belong to another worker
            self.metrics.forget(self._last.pop(tp))
            del self._progress[tp]

    @Service.task
    async def _watch(self) -> None:
        # A diagnostic must never take the worker down: every failure is logged and the
        # next look tries again (with a new connection if the broker went away).
        reader: OffsetReader | None = None
        try:
            while not self.should_stop:
                await self.sleep(self.settings.watchdog_interval_s)
                try:
                    if reader is None:
                        reader = OffsetReader(self.settings.kafka_bootstrap)
                        await reader.start()
                    offsets = await reader.read(self.group, sorted(self.owned_partitions()))
                    # A lag that did not move may be only transaction markers: look past.
                    offsets = [await reader.readable(o) if self.unmoved(o) else o
                               for o in offsets]  # fmt: skip
                    self.look(offsets, time.monotonic())
                except (TimeoutError, KafkaError, OSError) as exc:
                    log.debug("watchdog could not read offsets: %s", exc)
                    if reader is not None:
                        await reader.stop()
                    reader = None
                except Exception:
                    log.exception("watchdog look failed")
        finally:
            if reader is not None:
                await reader.stop()

    async def on_start(self) -> None:
        if self.port:
            app = web.Application()
            app.router.add_get("/metrics", self._serve_metrics)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, self.settings.worker_metrics_host, self.port).start()

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

"""Faust's aiokafka transport with one rule added: a partition is sought before it is read.

Why: after every assignment Faust's recovery makes the event partitions fetchable
(``resume_partitions``) and only then, awaiting the broker, moves them to their
committed offsets (``perform_seek``). Records fetched in between reach the agents and
are processed; the seek then rewinds the partition and they are processed again, and the
seek's reset of Faust's read and committed offsets races with the records still in
flight, which can drop records or leave a gap in the acknowledged offsets that Faust
never commits past (the partition's committed offset freezes). This is the ordering bug
of faust-streaming#216 (fixed there for one code path by #217) that remains in the
paths taken by apps with tables (``Recovery.on_recovery_completed``) and after a
rebalance; faust-streaming#629 reports its symptoms. It shows on restarts under traffic.

The rule, enforced where every recovery path passes through the consumer: a
non-changelog partition only becomes fetchable in :meth:`Consumer.perform_seek`, after
it is positioned at its committed offset. ``resume_partitions`` merely marks it as
wanted. Changelog partitions (table recovery positions them itself) are untouched.

A second fault lives next to it: Faust hands aiokafka its *live* set of active
partitions for a fetch that may wait a second. When recovery pauses the changelogs
before the event partitions are resumed, that set is briefly empty — and aiokafka reads
an empty set as "every partition". Records prefetched for the paused event partitions
are then returned, and Faust, finding them not active, drops them after aiokafka has
moved past them: they are never processed, never committed, and the partition's lag
stays for good (the replay stall). :meth:`Consumer._getmany` therefore gives aiokafka a
snapshot, and never an empty one.

Registered as the Faust transport ``hookstream-kafka`` (entry point in pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from faust.transport.drivers import aiokafka as driver
from faust.types import TP, ConsumerT

SCHEME = "hookstream-kafka"


class Consumer(driver.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Partitions the app asked to resume that still wait for their seek.
        self._awaiting_seek: set[TP] = set()

    def _stream_partitions(self, tps: Iterable[TP]) -> set[TP]:
        return {tp for tp in tps if not self._is_changelog_tp(tp)}

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        # A new generation: every event partition waits for its seek again. Paused from
        # the first moment, so not even the assignment itself makes one fetchable.
        self._awaiting_seek.clear()
        self._paused_partitions.update(self._stream_partitions(assigned))
        await super().on_partitions_assigned(assigned, generation_id)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self._awaiting_seek.difference_update(revoked)
        await super().on_partitions_revoked(revoked)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        wanted = set(tps)
        held = self._stream_partitions(wanted)
        self._awaiting_seek.update(held)
        super().resume_partitions(wanted - held)
        if held:
            self.log.debug("holding %d partitions until their seek: %r", len(held), held)

    async def _getmany(
        self,
        active_partitions: set[TP] | None,
        timeout: float,  # noqa: ASYNC109 (Faust's)
    ) -> Mapping[TP, list[Any]]:
        if active_partitions is None:  # client-only apps read everything
            return await super()._getmany(None, timeout)
        snapshot = set(active_partitions)
        if not snapshot:
            await self.sleep(min(timeout, 1.0))
            return {}
        return await super()._getmany(snapshot, timeout)

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        positioned = self._awaiting_seek & set(self.assignment())
        self._awaiting_seek.clear()
        super().resume_partitions(positioned)
        self.log.debug("sought, now fetching %d partitions: %r", len(positioned), positioned)


class ConsumerThread(driver.AIOKafkaConsumerThread):
    """The worker's aiokafka consumer, reading only committed records.

    ``hookstream dlq retry`` writes its copies to the retry topics in a transaction, with
    the offset that marks them retried: copies of a retry that failed midway are aborted,
    and must never reach an agent (Faust reads uncommitted records unless it runs
    exactly-once itself). Topics written without transactions read the same either way.
    """

    def _create_worker_consumer(self, transport: driver.Transport) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"  # used by start(); no public setter
        return consumer


class Transport(driver.Transport):
    Consumer: ClassVar[type[ConsumerT]] = Consumer

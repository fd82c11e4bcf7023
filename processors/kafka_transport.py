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

And one shortcut: Faust moves each record through its streams one at a time (a task
pair to wait on per record, an event, a queue, a sensor call, an acknowledgement), about
100 µs of the worker's CPU per record before an agent sees it. A processor that
projects records in batches can instead take the records of its source topics as they
are fetched (:func:`take_in_bulk`): :meth:`Consumer._getmany` hands each partition's
list to the processor's handler with Faust's own read-offset and gap bookkeeping, and
the handler acknowledges them with :meth:`Consumer.ack_offsets` once they are done, so
offsets are committed by Faust as before, only past records that were acknowledged.

Registered as the Faust transport ``hookstream-kafka`` (entry point in pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar
from weakref import WeakKeyDictionary

from faust.transport.drivers import aiokafka as driver
from faust.types import TP, AppT, ConsumerT, Message
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

SCHEME = "hookstream-kafka"

# A partition's fetched records (aiokafka ConsumerRecords, in offset order), handed over.
BulkHandler = Callable[["Consumer", TP, list[Any]], Awaitable[None]]
_BULK: WeakKeyDictionary[AppT, dict[str, BulkHandler]] = WeakKeyDictionary()


def take_in_bulk(app: AppT, topics: Iterable[str], handler: BulkHandler) -> None:
    """Records of ``topics`` go to ``handler``, a partition's fetched list at a time.

    They bypass Faust's streams: an agent must still read the topics (Faust subscribes
    to what its agents read), but receives none of their records. The handler runs in
    the fetch loop (awaiting it holds back the next fetch) and calls
    :meth:`Consumer.ack_offsets` when the records are done with.
    """
    _BULK.setdefault(app, {}).update(dict.fromkeys(topics, handler))


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
        records = await super()._getmany(snapshot, timeout)
        handlers = _BULK.get(self.app)
        if not handlers or not records or not self.flow_active:
            return records  # with the flow stopped, Faust drops them and seeks back
        return await self._hand_over(records, active_partitions, handlers)

    async def _hand_over(
        self,
        records: Mapping[TP, list[Any]],
        active_partitions: set[TP],
        handlers: Mapping[str, BulkHandler],
    ) -> Mapping[TP, list[Any]]:
        """Give bulk topics' records to their handler; the rest go on to Faust's streams.

        What Faust's ``getmany`` and ``_drain_messages`` check per record, checked here
        per list: still this generation, the partition still active (else dropped, as
        Faust drops them: a partition that comes back is sought to its committed
        offset), records behind the read offset dropped, gaps recorded.
        """
        generation = self.app.consumer_generation_id
        rest: dict[TP, list[Any]] = {}
        for tp, batch in records.items():
            handler = handlers.get(tp.topic)
            if handler is None:
                rest[tp] = batch
                continue
            if self.app.consumer_generation_id != generation or not self.flow_active:
                continue
            if tp not in active_partitions and tp not in self._buffered_partitions:
                continue
            fresh = await self._read_in_order(tp, batch)
            if not fresh:
                continue
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            await handler(self, tp, fresh)
        return rest

    async def _read_in_order(self, tp: TP, batch: list[Any]) -> list[Any]:
        read = self._read_offset[tp]
        acks = self.app.topics.acks_enabled_for(tp.topic)
        fresh = []
        for record in batch:
            offset = record.offset
            if read is None or offset >= read:
                if read and offset - read > 1 and acks:
                    # Offsets no record stands at (transaction markers): committable.
                    await self._add_gap(tp, read + 1, offset)
                fresh.append(record)
                read = offset
        self._read_offset[tp] = read
        return fresh

    def ack_offsets(self, tp: TP, offsets: Sequence[int]) -> None:
        """Acknowledge records taken in bulk: ``Consumer.ack``'s bookkeeping, for many."""
        if not self.app.topics.acks_enabled_for(tp.topic):
            return
        with ack_lock:
            committed = self._committed_offset[tp]
            index = self._acked_index[tp]
            fresh = [o for o in offsets if (committed is None or o >= committed) and o not in index]
            index.update(fresh)
            self._acked[tp].extend(fresh)
            self._n_acked += len(fresh)
            notify(self._waiting_for_ack)

    def to_message(self, tp: TP, record: Any) -> Message:
        """The Faust message of a record taken in bulk (for the dead-letter topic)."""
        return self._to_message(tp, record)

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

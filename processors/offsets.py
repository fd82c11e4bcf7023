"""A consumer group's place in its topics, as the broker sees it: committed offset and log end.

This is the view of a lag exporter, independent of what the worker believes: a
partition the worker stopped reading still shows its frozen committed offset and its
growing log end. The watchdog, ``hookstream replay`` and the tests read it.

A log end counts offsets that hold no record a worker can read: the commit and abort
markers of Kafka transactions (``hookstream dlq retry`` writes the retry topics in
transactions) and the records of aborted ones. A worker never receives them, so after a
transaction's last record it commits the marker's offset, not the log end: a lag of 1
that never goes away. :meth:`OffsetReader.readable` looks past them, as a read-committed
consumer would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, replace

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed here
    end: int  # the offset the next record will get
    # Offsets before ``end`` known to hold nothing a worker can read (OffsetReader.readable).
    unreadable: int = 0

    @property
    def lag(self) -> int:
        return max(0, self.end - self.unreadable - (self.committed or 0))

    @property
    def name(self) -> str:
        return f"{self.topic}/{self.partition}"


# How long a look past the committed offset waits for the broker's answer; without one,
# the lag stands as read.
PROBE_TIMEOUT_MS = 2_000


class OffsetReader:
    """Reads committed offsets and log ends; keep one open for periodic reads."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._probe: AIOKafkaConsumer | None = None  # read-committed, started on first use

    async def __aenter__(self) -> OffsetReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()

    async def stop(self) -> None:
        for consumer in (self._consumer, self._probe):
            if consumer is not None:
                with contextlib.suppress(KafkaError, OSError):
                    await consumer.stop()
        with contextlib.suppress(KafkaError, OSError):
            await self._admin.close()

    async def partitions(self, topics: Iterable[str]) -> list[TopicPartition]:
        """Every partition of ``topics`` that the cluster knows."""
        described = await self._admin.describe_topics(list(topics))
        return sorted(
            TopicPartition(topic["topic"], partition["partition"])
            for topic in described
            for partition in topic["partitions"]
        )

    async def read(
        self, group: str, partitions: Iterable[TopicPartition]
    ) -> list[PartitionOffsets]:
        tps = list(partitions)
        if not tps:
            return []
        committed = await self._admin.list_consumer_group_offsets(group, partitions=tps)
        ends = await self._consumer.end_offsets(tps)
        result = []
        for tp in tps:
            meta = committed.get(tp)
            offset = meta.offset if meta is not None and meta.offset >= 0 else None
            result.append(PartitionOffsets(tp.topic, tp.partition, offset, ends[tp]))
        return result

    async def readable(self, offsets: PartitionOffsets) -> PartitionOffsets:
        """``offsets`` with no lag when no record a read-committed consumer would get lies
        between the committed offset and the log end (only transaction markers, or aborted
        records): such a partition has nothing left to read.

        One fetch from the committed offset; meant for the few partitions whose lag did
        not move, not for every look.
        """
        if offsets.committed is None or offsets.lag == 0:
            return offsets
        if self._probe is None:
            probe = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False,
                                     isolation_level="read_committed")  # fmt: skip
            await probe.start()
            self._probe = probe
        tp = TopicPartition(offsets.topic, offsets.partition)
        self._probe.assign([tp])
        self._probe.seek(tp, offsets.committed)
        fetched = await self._probe.getmany(tp, timeout_ms=PROBE_TIMEOUT_MS, max_records=1)
        if fetched.get(tp) or await self._probe.position(tp) < offsets.end:
            return offsets  # a record to read, or the broker did not answer in time
        return replace(offsets, unreadable=offsets.end - offsets.committed)


def split_partition_name(name: str) -> tuple[str, int]:
    """``"github.events/3"`` → ``("github.events", 3)`` (topic names may not hold ``/``)."""
    topic, _, partition = name.rpartition("/")
    return topic, int(partition)


def reached(offsets: Iterable[PartitionOffsets], horizon: dict[str, int]) -> bool:
    """Whether the group has committed up to ``horizon`` (``"topic/partition"`` → offset)."""
    return all(
        horizon.get(o.name, 0) == 0 or (o.committed is not None and o.committed >= horizon[o.name])
        for o in offsets
    )

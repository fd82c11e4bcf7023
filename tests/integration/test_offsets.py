"""A group's lag against the real broker, with Kafka transactions in the log.

``hookstream dlq retry`` writes retry topics in transactions. Their markers take offsets
no consumer receives, so a group that read every record commits short of the log end;
:meth:`OffsetReader.readable` must see that nothing is left, and only then.
"""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from processors.offsets import OffsetReader, PartitionOffsets
from tests.helpers import eventually

pytestmark = pytest.mark.integration


async def _transaction(producer: AIOKafkaProducer, topic: str, n: int, *, commit: bool) -> None:
    await producer.begin_transaction()
    for i in range(n):
        await producer.send_and_wait(topic, f"record {i}".encode(), partition=0)
    if commit:
        await producer.commit_transaction()
    else:
        await producer.abort_transaction()


async def _commit(bootstrap: str, group: str, tp: TopicPartition, offset: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: offset})
    finally:
        await consumer.stop()


async def test_transaction_markers_are_not_lag_but_records_after_them_are(
    kafka_bootstrap: str,
) -> None:
    topic, group = f"offsets.{uuid.uuid4().hex[:8]}", f"offsets-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(topic, 0)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap,
                                transactional_id=f"offsets-{uuid.uuid4().hex}")  # fmt: skip
    log = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    await log.start()
    try:
        async with OffsetReader(kafka_bootstrap) as reader:

            async def look(group: str = group) -> tuple[PartitionOffsets, PartitionOffsets]:
                [read] = await reader.read(group, [tp])
                return read, await reader.readable(read)

            async def transaction(n: int, *, commit: bool, end: int) -> None:
                await _transaction(producer, topic, n, commit=commit)

                async def marked() -> bool:  # the coordinator writes markers after it answers
                    return bool((await log.end_offsets([tp]))[tp] == end)

                await eventually(marked, f"the log end at {end}", 30)

            # Records 0-2 and a commit marker at 3; the group read the records.
            await transaction(3, commit=True, end=4)
            await _commit(kafka_bootstrap, group, tp, 3)
            read, readable = await look()
            assert (read.committed, read.end, read.lag) == (3, 4, 1)
            assert (readable.committed, readable.end, readable.lag) == (3, 4, 0)
            read, readable = await look(f"{group}-never")
            assert (read.committed, read.lag) == (None, 4)
            assert readable == read  # a group that never committed: nothing to look past

            # A second transaction, records 4-5 and marker 6: they wait to be read, and
            # the lag counts every offset up to the log end, markers included.
            await transaction(2, commit=True, end=7)
            read, readable = await look()
            assert readable == read
            assert readable.lag == 4

            # The group reads them; then an aborted transaction (records 7-8, marker 9)
            # leaves nothing a read-committed consumer would get.
            await _commit(kafka_bootstrap, group, tp, 6)
            await transaction(2, commit=False, end=10)
            read, readable = await look()
            assert (read.committed, read.end, read.lag) == (6, 10, 4)
            assert readable.lag == 0
            assert readable.end == 10  # the log end itself is reported as it is
    finally:
        await log.stop()
        await producer.stop()

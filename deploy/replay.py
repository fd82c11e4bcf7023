"""``hookstream replay PROJECTION``: rebuild a projection from the start of the log.

The processor's consumer group is moved back to the beginning of ``github.events``
(the group must be idle: stop its workers first), then the worker runs with
``HOOKSTREAM_REPLAY=1`` — effectors such as HTTP dispatch are off — until its committed
offsets reach the end the log had when the replay began. Then it is stopped, and the
normal worker can be started again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from deploy.commands import hookstream_argv
from schemas.errors import HookstreamError
from schemas.settings import Settings

IDLE_GROUP_STATES = ("Empty", "Dead", "")


class ReplayError(HookstreamError):
    pass


@dataclass(frozen=True)
class Horizon:
    group: str
    end: dict[TopicPartition, int]

    @property
    def records(self) -> int:
        return sum(self.end.values())


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


async def rewind(settings: Settings, group: str) -> Horizon:
    """Point ``group`` at the beginning of the event log; return where the log ends now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        state, members = await _group_state(admin, group)
    finally:
        await admin.close()
    if state not in IDLE_GROUP_STATES:
        raise ReplayError(
            f"consumer group {group} is {state} with {members} member(s): "
            "stop its workers before replaying"
        )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(settings.events_topic, p)
            for p in sorted(consumer.partitions_for_topic(settings.events_topic) or ())
        ] or [TopicPartition(settings.events_topic, p) for p in range(settings.events_partitions)]
        consumer.assign(partitions)
        begin = await consumer.beginning_offsets(partitions)
        end = await consumer.end_offsets(partitions)
        await consumer.commit({tp: begin[tp] for tp in partitions})
    finally:
        await consumer.stop()
    return Horizon(group, end)


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


def replay(settings: Settings, processor: str, timeout_s: float = 3600.0) -> Horizon:
    """Run the processor's worker in replay mode until it has read the whole log."""
    horizon = asyncio.run(rewind(settings, settings.app_id(processor)))
    print(f"replaying {horizon.records} records of {settings.events_topic} into {processor}")
    worker = subprocess.Popen(
        hookstream_argv("worker", processor),
        env=dict(os.environ, HOOKSTREAM_REPLAY="1"),
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not asyncio.run(caught_up(settings, horizon)):
            if worker.poll() is not None:
                raise ReplayError(f"the {processor} worker exited with {worker.returncode}")
            if time.monotonic() > deadline:
                raise ReplayError(f"replay did not finish within {timeout_s:g} s")
            time.sleep(1.0)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
    print(f"replay of {processor} done: the worker read up to the log's end at the start")
    return horizon

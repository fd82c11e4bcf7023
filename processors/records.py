"""What every processor's Faust app shares: its configuration, raw-bytes topics, headers."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import faust
from aiokafka.structs import ConsumerRecord
from faust.types import TP, Message
from prometheus_client import CollectorRegistry

from processors import kafka_transport
from processors.watchdog import Watchdog, source_partitions
from schemas.envelope import Envelope
from schemas.settings import Settings
from schemas.topics import TopicSpec

log = logging.getLogger("hookstream.worker")


def processor_app(
    settings: Settings, processor: str, registry: CollectorRegistry | None = None
) -> faust.App:
    """The Faust app of one processor: its own id (= consumer group), offsets, changelogs.

    Tables get the event log's partition count, so a table is co-partitioned with
    ``github.events``: a delivery and the state it touches live on the same partition.
    """
    datadir = settings.data_dir / "faust" / processor
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id(processor),
        broker=[
            f"{kafka_transport.SCHEME}://{host.strip()}"
            for host in settings.kafka_bootstrap.split(",")
        ],
        # Tables persist in RocksDB under the data dir, so a restart reads only the
        # changelog written since the store's last flush, not every key ever written;
        # memory:// rebuilds them from their changelogs at every start.
        store=settings.faust_store,
        datadir=str(datadir),
        web_enabled=False,
        topic_partitions=settings.events_partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.kafka_session_timeout_s,
    )
    # The worker's metrics: the watchdog's, and the processor's own in the same registry.
    registry = registry or CollectorRegistry(auto_describe=True)
    app.add_dependency(Watchdog(app, settings, processor, registry))

    @app.on_partitions_assigned.connect
    async def announce(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # One line per rebalance: which source partitions this worker now owns.
        assigned: set[TP] = args[0]
        owned = [f"{tp.topic}/{tp.partition}" for tp in source_partitions(app, assigned)]
        log.info(
            "%s worker owns %d partitions", processor, len(owned),
            extra={"fields": {"processor": processor, "partitions": owned}},
        )  # fmt: skip

    return app


# Compacted, and "delete" with no retention so that `hookstream replay` may empty a
# changelog with DeleteRecords (Kafka refuses it on compact-only topics).
CHANGELOG_CONFIGS = {"cleanup.policy": "compact,delete", "retention.ms": "-1"}


def faust_topic_specs(app: faust.App, settings: Settings) -> list[TopicSpec]:
    """The topics Faust creates for ``app``: its tables' changelogs, its own topics.

    Created before the worker starts: when Faust creates them itself, a consumer that
    joins its group first is assigned none of their partitions, and the assignment
    stays so until the next metadata refresh (5 minutes).
    """
    replication = settings.kafka_replication_factor
    specs = [TopicSpec(f"{app.conf.id}-__assignor-__leader", 1, replication)]
    for table in app.tables.values():
        changelog = table.changelog_topic
        specs.append(
            TopicSpec(
                changelog.get_topic_name(),
                changelog.partitions or settings.events_partitions,
                replication,
                CHANGELOG_CONFIGS,
            )
        )
    for agent in app.agents.values():
        channel = agent.channel
        if isinstance(channel, faust.TopicT) and channel.internal:
            for name in channel.topics:
                specs.append(
                    TopicSpec(name, channel.partitions or settings.events_partitions, replication)
                )
    return specs


def record_headers(
    headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None,
) -> list[tuple[str, bytes]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def raw_topic(app: faust.App, *names: str, **options: Any) -> faust.TopicT:
    """A topic of bytes: the processors read and write exact bytes, never re-encode.

    Several names make a channel an agent reads as one (a source and its retry topic);
    only a single-name topic can be sent to.
    """
    return app.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        **options,
    )


def delivery_envelope(message: Message | ConsumerRecord[bytes, bytes]) -> Envelope:
    """The delivery a ``github.events`` record holds, with where it sits in the log (from
    an agent's Faust message, or an aiokafka record taken in bulk)."""
    return Envelope.from_record(
        record_headers(message.headers), message.value or b"", key=message.key,
        topic=message.topic, partition=message.partition, offset=message.offset,
    )  # fmt: skip

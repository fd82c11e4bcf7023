"""What every processor's Faust app shares: its configuration, raw-bytes topics, headers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import faust

from schemas.settings import Settings


def processor_app(settings: Settings, processor: str) -> faust.App:
    """The Faust app of one processor: its own id (= consumer group), offsets, changelogs.

    Tables get the event log's partition count, so a table is co-partitioned with
    ``github.events``: a delivery and the state it touches live on the same partition.
    """
    datadir = settings.data_dir / "faust" / processor
    datadir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.app_id(processor),
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_partitions=settings.events_partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )


def record_headers(
    headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None,
) -> list[tuple[str, bytes]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def raw_topic(app: faust.App, name: str) -> faust.TopicT:
    """A topic of bytes: the processors read and write exact bytes, never re-encode."""
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

"""Kafka records as the processors see them: raw-bytes topics and header lists."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import faust


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

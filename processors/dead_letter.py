"""Dead letters: a record a processor cannot handle goes to ``<topic>.dlq``, whole.

The value and the original headers are kept byte for byte, so a fixed processor can
take the record back (``hookstream dlq retry``); the error travels in headers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import faust
from faust.types import Message

log = logging.getLogger(__name__)

ERROR_HEADER = "x-hookstream-error"
PROCESSOR_HEADER = "x-hookstream-processor"
SOURCE_HEADER = "x-hookstream-source"
MAX_ERROR_CHARS = 2000


def dead_letter_headers(
    original: Iterable[tuple[str, bytes]],
    *,
    processor: str,
    error: BaseException | str,
    source: str,
) -> list[tuple[str, bytes]]:
    """The original headers plus what failed, where, and on which record."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return [
        *original,
        (ERROR_HEADER, text[:MAX_ERROR_CHARS].encode()),
        (PROCESSOR_HEADER, processor.encode()),
        (SOURCE_HEADER, source.encode()),
    ]


async def park(
    dlq: faust.TopicT,
    message: Message,
    headers: list[tuple[str, bytes]],
    *,
    processor: str,
    error: BaseException,
) -> None:
    """Write ``message`` whole to the dead-letter topic and wait for Kafka's ack.

    Sent at once (``force``), not attached to the offset commit, so the record is in the
    DLQ before the stream moves past it.
    """
    log.warning("%s: dead-lettering %s@%d: %s", processor, message.tp, message.offset, error)
    source = f"{message.topic}/{message.partition}/{message.offset}"
    sent = await dlq.send(
        key=message.key,
        value=message.value,
        headers=dead_letter_headers(headers, processor=processor, error=error, source=source),
        force=True,
    )
    await sent

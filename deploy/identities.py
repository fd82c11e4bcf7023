"""``hookstream identities import|list``: explicit links from a CSV file, and who is who.

``import`` checks every row of the file before it writes anything: one bad row and
nothing is imported, and every bad row is reported as ``FILE:LINE: message``. A good
file becomes one :class:`schemas.identity.Link` per row on ``hookstream.identity``.
Rows are checked by :func:`ingress.identities.build_link`, as ``POST /v1/identities``
checks a body, so both refuse the same links in the same words.

``list`` reads ``hookstream.identity`` from its beginning to its current end, folds the
inputs into the resolver of the identity processor and returns one row per account.
"""

from __future__ import annotations

import asyncio
import csv
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from ingress.identities import InvalidIdentity, build_link
from processors.identity.resolver import resolve_all
from projections.query import QueryResult
from schemas.errors import HookstreamError
from schemas.identity import (
    Conflict,
    InputEvent,
    Link,
    Resolved,
    Source,
    parse_identity_event,
    record_key,
)
from schemas.settings import Settings
from schemas.topics import ensure_topics, topic_specs

log = logging.getLogger(__name__)

LIST_COLUMNS = ["github_user_id", "github_login", "platform_user", "roles", "source", "is_bot"]
# DESIGN.md §8's order; a file may put them in any order, its header says which.
CSV_COLUMNS = ("platform_user", "github_login", "github_user_id", "email", "role")
HEADER = ",".join(CSV_COLUMNS)
OUTPUTS = (Resolved, Conflict)  # the resolver's answers on the same topic: not inputs


class ImportRefused(HookstreamError):
    """The file cannot be imported; ``lines`` says why, one ``FILE:LINE: message`` each."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def load_links(path: Path, now: datetime) -> list[Link]:
    """Every row of a CSV file as a Link, or :class:`ImportRefused` naming every bad row."""
    try:
        # utf-8-sig: spreadsheets often save a byte-order mark before the header.
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ImportRefused([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ImportRefused([f"{path}: not UTF-8 text"]) from None
    return parse_links(str(path), text, now)


def parse_links(name: str, text: str, now: datetime) -> list[Link]:
    """The rows of a CSV text as Links; ``name`` is what messages call the file."""
    if not text.strip():
        raise ImportRefused([f"{name}: empty file: the first line must be the header {HEADER}"])
    reader = csv.reader(text.splitlines(keepends=True))
    columns = [cell.strip() for cell in next(reader)]
    if problem := _header_problem(columns):
        raise ImportRefused([f"{name}:{reader.line_num}: {problem}"])
    links: list[Link] = []
    errors: list[str] = []
    line = reader.line_num + 1  # where the next record starts (a quoted cell may span lines)
    for row in reader:
        start, line = line, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue  # a blank line, often the last one
        if len(row) != len(columns):
            errors.append(f"{name}:{start}: expected {len(columns)} cells, found {len(row)}")
            continue
        # The resolver orders links by (at, event_id): a microsecond apart, the rows keep
        # the file's order, so of two rows about one account the later one wins.
        at = now + timedelta(microseconds=start)
        try:
            links.append(build_link(_fields(columns, row), Source.CSV, at, whole="row"))
        except InvalidIdentity as exc:
            errors.append(f"{name}:{start}: {exc}")
    if errors:
        raise ImportRefused(errors)
    return links


def _header_problem(columns: list[str]) -> str | None:
    missing = [c for c in CSV_COLUMNS if c not in columns]
    unknown = [c or "(an empty name)" for c in columns if c not in CSV_COLUMNS]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if not (missing or unknown or repeated):
        return None
    found = [
        f"{what}: {', '.join(names)}"
        for what, names in (("missing", missing), ("unknown", unknown), ("repeated", repeated))
        if names
    ]
    return f"the header must name the columns {HEADER}, in any order ({'; '.join(found)})"


def _fields(columns: list[str], row: list[str]) -> dict[str, str | int | None]:
    """A row as JSON-like values: an empty cell is absent, an id of digits a number."""
    fields: dict[str, str | int | None] = {
        column: cell.strip() or None for column, cell in zip(columns, row, strict=True)
    }
    account = fields["github_user_id"]
    # Non-digits stay text, so that the check refuses them as not a positive integer.
    if isinstance(account, str) and account.isascii() and account.isdigit() and len(account) < 20:
        fields["github_user_id"] = int(account)
    return fields


async def publish_links(settings: Settings, links: list[Link]) -> None:
    """Write every link to the identity topic; returns once Kafka acknowledged them all."""
    await ensure_topics(
        settings.kafka_bootstrap,
        [spec for spec in topic_specs(settings) if spec.name == settings.identity_topic],
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id="hookstream-identities-import",
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.kafka_linger_ms,
    )
    await producer.start()
    try:
        # Idempotence keeps them in file order on the one partition, however many in flight.
        sent = [
            await producer.send(
                settings.identity_topic,
                value=link.model_dump_json().encode(),
                key=record_key(link),
            )
            for link in links
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def read_inputs(settings: Settings) -> list[InputEvent]:
    """The inputs on the identity topic, from its beginning to its end as of now."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        topic = settings.identity_topic
        if topic not in await consumer.topics():
            return []  # nothing linked or seen yet
        # One partition (schemas.topics): its offsets are the order the resolver's versions use.
        partitions = [TopicPartition(topic, 0)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        found: list[InputEvent | None] = []
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            batch = await consumer.getmany(*partitions, timeout_ms=1000)
            for tp, records in batch.items():
                # Records written since we looked at the end wait for the next `list`.
                found.extend(_input(r.value, r.offset) for r in records if r.offset < end[tp])
        return [event for event in found if event is not None]
    finally:
        await consumer.stop()


def _input(value: bytes | None, offset: int) -> InputEvent | None:
    """The input a record holds; None for the resolver's answers and unreadable records."""
    try:
        event = parse_identity_event(value or b"")
    except ValidationError as exc:
        # The identity worker sends such records to its dead-letter topic; a listing that
        # stopped at one would hide every account after it.
        log.warning("skipping unreadable identity record at offset %d: %s", offset, exc)
        return None
    return None if isinstance(event, OUTPUTS) else event


def identity_table(inputs: Iterable[InputEvent]) -> QueryResult:
    """One row per account that has a person or a login, as ``hookstream sql`` shows rows."""
    rows = [
        [r.github_user_id, r.github_login, r.platform_user, ",".join(r.roles), r.source, r.is_bot]
        for r in resolve_all(inputs).values()
        if r.platform_user is not None or r.github_login is not None
    ]
    return QueryResult(LIST_COLUMNS, rows)

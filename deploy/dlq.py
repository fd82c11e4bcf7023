"""``hookstream dlq list|show|retry TOPIC``: the dead letters, and sending them back.

A dead letter (:mod:`processors.dead_letter`) is a record a processor could not handle,
whole, with headers naming the error, the processor and the source record
(``topic/partition/offset``).

``retry`` copies a dead letter to ``<source topic>.retry.<processor>``, which that
processor reads with the same agent as its source (:func:`schemas.topics.retry_topic`):
the value byte for byte, the key, the original headers (without the dead letter's own)
and ``x-hookstream-retry-of: <dlq topic>/<offset>``, on the source record's partition.
What was retried is the committed position of the group ``<group prefix>-dlq-retry`` on
the dead-letter topic, with the offsets retried one by one above it in the commit's
metadata. The copies and that commit are one Kafka transaction (the workers read only
committed records), so a dead letter goes back once however a retry ends; two retries at
once fence each other. A record that fails again is parked again, its source now the
retry topic, and shows in ``list`` with its new error.

Decisions and formatting are pure functions; the Kafka I/O is at the end.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from processors.dead_letter import ERROR_HEADER, PROCESSOR_HEADER, SOURCE_HEADER
from projections.query import QueryResult, render
from schemas.envelope import PayloadError, RecordHeader, payload_bytes
from schemas.errors import HookstreamError
from schemas.settings import Settings
from schemas.topics import ensure_topics, retry_sources, retry_topic, topic_specs

RETRY_OF_HEADER = "x-hookstream-retry-of"
DEAD_LETTER_HEADERS = (ERROR_HEADER, PROCESSOR_HEADER, SOURCE_HEADER)
LIST_COLUMNS = ["offset", "age", "processor", "source", "delivery", "event", "retried", "error"]
MIN_ERROR_WIDTH = 24
# The broker keeps at most offset.metadata.max.bytes (4096 by default) of commit metadata.
MAX_METADATA_CHARS = 4000
SINGLES_PREFIX = "retried:"


class DlqRefused(HookstreamError):
    """A request that cannot be carried out as given (a usage mistake: exit 2)."""


# --- dead letters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a dead letter was read: ``topic/partition/offset``, or only a topic."""

    topic: str
    partition: int | None = None
    offset: int | None = None

    @classmethod
    def parse(cls, text: str) -> Source:
        # Topic names cannot hold "/" (Kafka allows [a-zA-Z0-9._-]).
        parts = text.rsplit("/", 2)
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            return cls(parts[0], int(parts[1]), int(parts[2]))
        return cls(text)

    def __str__(self) -> str:
        if self.partition is None:
            return self.topic
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True)
class DeadLetter:
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> str | None:
        """The last value of a header, as text (dead-letter headers are appended last)."""
        found = [value for key, value in self.headers if key == name]
        return found[-1].decode("utf-8", "replace") if found else None

    @property
    def processor(self) -> str | None:
        return self.header(PROCESSOR_HEADER)

    @property
    def source(self) -> Source | None:
        text = self.header(SOURCE_HEADER)
        return Source.parse(text) if text else None

    @property
    def error(self) -> str:
        return self.header(ERROR_HEADER) or ""


@dataclass(frozen=True)
class Refusal:
    """A dead letter that cannot be sent back, and why."""

    offset: int
    reason: str


@dataclass(frozen=True)
class RetryCopy:
    """What ``retry`` writes for one dead letter."""

    offset: int  # of the dead letter
    processor: str
    topic: str  # the retry topic
    partition: int | None  # the source record's; None: by key, as the source was
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def retry_topics(settings: Settings) -> dict[str, int]:
    """Every retry topic a processor reads, with its partition count."""
    return {retry_topic(s, p): n for s, n, p in retry_sources(settings)}


def dead_letter_topics(settings: Settings) -> list[str]:
    return [
        settings.dlq_topic,
        settings.dispatch_dlq_topic,
        settings.checks_dlq_topic,
        settings.identity_dlq_topic,
    ]


def retry_headers(headers: Iterable[tuple[str, bytes]], retry_of: str) -> list[tuple[str, bytes]]:
    """The record's original headers, without what the dead letter added, and where from."""
    dropped = (*DEAD_LETTER_HEADERS, RETRY_OF_HEADER)  # a letter retried before: the newest
    return [(k, v) for k, v in headers if k not in dropped] + [(RETRY_OF_HEADER, retry_of.encode())]


def not_retryable(letter: DeadLetter, topics: Mapping[str, int]) -> str | None:
    """Why ``letter`` cannot be sent back (no processor reads a retry topic for it), or None."""
    processor, source = letter.processor, letter.source
    if processor is None or source is None:
        return f"not a dead letter: no {PROCESSOR_HEADER} and {SOURCE_HEADER} headers"
    if retry_topic(source.topic, processor) not in topics:
        return f"{processor} reads no retry topic for {source.topic}"
    return None


def retry_copy(dlq: str, letter: DeadLetter, topics: Mapping[str, int]) -> RetryCopy | Refusal:
    if (reason := not_retryable(letter, topics)) is not None:
        return Refusal(letter.offset, reason)
    processor, source = letter.processor, letter.source
    assert processor is not None
    assert source is not None
    topic = retry_topic(source.topic, processor)
    # Same partition as the source record, so it meets the same table partition; a retry
    # topic has the partitions of its source. Unknown (only a topic named): by key.
    partition = source.partition
    if partition is not None and partition >= topics[topic]:
        partition = None
    return RetryCopy(
        letter.offset, processor, topic, partition, letter.key, letter.value,
        retry_headers(letter.headers, f"{dlq}/{letter.offset}"),
    )  # fmt: skip


# --- what was retried -----------------------------------------------------------------------


@dataclass(frozen=True)
class RetryState:
    """The group's mark on a dead-letter topic: what was sent back already."""

    below: int = 0  # every dead letter below this offset (the committed offset)
    singles: frozenset[int] = field(default_factory=frozenset)  # retried one by one above it

    def retried(self, offset: int) -> bool:
        return offset < self.below or offset in self.singles

    def marking(self, offsets: Iterable[int]) -> RetryState:
        singles = set(self.singles) | {o for o in offsets if o >= self.below}
        below = self.below
        while below in singles:
            singles.discard(below)
            below += 1
        return RetryState(below, frozenset(singles))

    def through(self, end: int) -> RetryState:
        """Every dead letter below ``end`` handled."""
        below = max(self.below, end)
        return RetryState(below, frozenset(o for o in self.singles if o >= below)).marking(())

    def metadata(self) -> str:
        if not self.singles:
            return ""
        return SINGLES_PREFIX + ",".join(str(o) for o in sorted(self.singles))

    @classmethod
    def parse(cls, committed: int | None, metadata: str | None) -> RetryState:
        below = committed if committed is not None and committed >= 0 else 0
        singles: frozenset[int] = frozenset()
        if metadata and metadata.startswith(SINGLES_PREFIX):
            rest = metadata.removeprefix(SINGLES_PREFIX)
            singles = frozenset(int(o) for o in rest.split(",") if o.strip().isdigit())
        return cls(below, singles).marking(())


@dataclass(frozen=True)
class RetryPlan:
    offsets: list[int]  # the dead letters to read and send back, in order
    state: RetryState  # what the group commits with the copies


def plan_retry(
    topic: str,
    state: RetryState,
    first: int,
    end: int,
    *,
    offsets: Sequence[int],
    every: bool,
    force: bool,
) -> RetryPlan:
    """Which dead letters of ``topic`` (offsets ``first`` ≤ o < ``end``) go back."""
    if every and offsets:
        raise DlqRefused("give --all or --offset N, not both")
    if not every and not offsets:
        raise DlqRefused("give --offset N (repeatable) or --all")
    if every:
        if force:
            raise DlqRefused("--force goes with --offset; --all never sends a record twice")
        todo = [o for o in range(max(first, state.below), end) if o not in state.singles]
        return RetryPlan(todo, state.through(end))
    for offset in offsets:
        if not first <= offset < end:
            raise DlqRefused(f"offset {offset} is not in {topic} ({holds(first, end)})")
    todo = sorted(set(offsets))
    done = [o for o in todo if state.retried(o)]
    if done and not force:
        raise DlqRefused(
            f"{topic}/{done[0]} was retried already (`dlq list` shows its fate); "
            "--force sends it again"
        )
    planned = RetryPlan(todo, state.marking(todo))
    if len(planned.state.metadata()) > MAX_METADATA_CHARS:
        raise DlqRefused(
            f"too many dead letters of {topic} retried one by one above offset "
            f"{state.below}: retry with --all"
        )
    return planned


def holds(first: int, end: int) -> str:
    return "it is empty" if first >= end else f"it holds offsets {first} to {end - 1}"


# --- presenting -----------------------------------------------------------------------------


def human_age(seconds: float) -> str:
    """``45 s``, ``3 min``, ``2 h``, ``5 d``: whole units, rounded down."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86_400:
        return f"{s // 3600} h"
    return f"{s // 86_400} d"


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def list_table(
    letters: Iterable[DeadLetter], now_ms: int, state: RetryState, topics: Mapping[str, int]
) -> QueryResult:
    """One row per dead letter; ``retried``: yes, no, or n/a (no retry topic for it)."""
    rows: list[list[object]] = []
    for letter in letters:
        if not_retryable(letter, topics) is not None:
            retried = "n/a"
        else:
            retried = "yes" if state.retried(letter.offset) else "no"
        source = letter.source
        rows.append([
            letter.offset,
            human_age((now_ms - letter.timestamp_ms) / 1000),
            letter.processor,
            str(source) if source else None,
            letter.header(RecordHeader.DELIVERY),
            letter.header(RecordHeader.EVENT),
            retried,
            first_line(letter.error),
        ])  # fmt: skip
    return QueryResult(list(LIST_COLUMNS), rows)


def fit_errors(result: QueryResult, width: int) -> QueryResult:
    """The table with its last column (the error) cut to fit ``width`` characters a line."""
    others = [
        max([len(name)] + [len(_text(row[i])) for row in result.rows])
        for i, name in enumerate(result.columns[:-1])
    ]
    room = max(MIN_ERROR_WIDTH, width - sum(others) - 3 * len(others))
    rows = [[*row[:-1], truncate(str(row[-1]), room)] for row in result.rows]
    return QueryResult(result.columns, rows)


def _text(value: object) -> str:
    return "NULL" if value is None else str(value)  # as projections.query renders a cell


def render_list(result: QueryResult, fmt: str, width: int) -> str:
    return render(fit_errors(result, width) if fmt == "table" else result, fmt)


def printable(raw: bytes) -> str:
    """Text when ``raw`` is readable UTF-8 without control characters, else a Python repr."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return repr(raw)
    if all(ch.isprintable() or ch in "\n\t" for ch in text):
        return text
    return repr(raw)


def body_text(value: bytes | None, content_type: str | None) -> tuple[str, str]:
    """(what the body is, how to show it): pretty JSON when it is JSON, else a safe repr."""
    if value is None:
        return "no body (null value)", ""
    try:
        return "JSON", _pretty(value)
    except orjson.JSONDecodeError:
        pass
    if content_type:
        try:
            return "form-encoded, its payload field as JSON", _pretty(
                payload_bytes(value, content_type)
            )
        except (PayloadError, orjson.JSONDecodeError):
            pass
    return "not JSON", repr(value)


def _pretty(raw: bytes) -> str:
    return orjson.dumps(orjson.loads(raw), option=orjson.OPT_INDENT_2).decode()


def show_text(topic: str, letter: DeadLetter, now_ms: int) -> str:
    at = datetime.fromtimestamp(letter.timestamp_ms / 1000, UTC)
    age = human_age((now_ms - letter.timestamp_ms) / 1000)
    lines = [
        f"{topic}/{letter.offset}: dead-lettered {at.isoformat(timespec='seconds')} ({age} ago)",
        f"key: {'none' if letter.key is None else printable(letter.key)}",
        "headers:",
    ]
    for name, value in letter.headers:
        text = printable(value).replace("\n", "\n    ")
        lines.append(f"  {printable(name.encode())}: {text}")
    kind, body = body_text(letter.value, letter.header(RecordHeader.CONTENT_TYPE))
    size = 0 if letter.value is None else len(letter.value)
    lines.append(f"body: {size} bytes, {kind}")
    if body:
        lines.append(body)
    return "\n".join(lines)


def retry_report(topic: str, copies: list[RetryCopy], refusals: list[Refusal], next_: int) -> str:
    lines = [
        f"{topic}/{c.offset} → {c.topic}"
        + (f"/{c.partition}" if c.partition is not None else "")
        + f" ({c.processor})"
        for c in copies
    ]
    lines += [f"{topic}/{r.offset}: not retried: {r.reason}" for r in refusals]
    noun = "dead letter" if len(copies) == 1 else "dead letters"
    lines.append(f"sent {len(copies)} {noun} back; `retry --all` now starts at offset {next_}")
    return "\n".join(lines)


# --- Kafka ----------------------------------------------------------------------------------


def retry_group(settings: Settings) -> str:
    return f"{settings.group_prefix}-dlq-retry"


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _check_name(settings: Settings, topic: str) -> None:
    known = dead_letter_topics(settings)
    if topic not in known:
        raise DlqRefused(f"{topic} is not a dead-letter topic (they are: {', '.join(known)})")


class _Log:
    """The one partition of a dead-letter topic, read with a consumer of no group."""

    def __init__(self, settings: Settings, topic: str) -> None:
        _check_name(settings, topic)
        self.settings = settings
        self.topic = topic
        self.tp = TopicPartition(topic, 0)
        self.first = self.end = 0  # its offsets: first ≤ o < end (read on entering)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, group_id=None
        )

    async def __aenter__(self) -> _Log:
        try:
            await self.consumer.start()
            if self.topic not in await self.consumer.topics():
                raise DlqRefused(
                    f"no topic {self.topic} at {self.settings.kafka_bootstrap} "
                    "(the workers and `hookstream kafka up` create it)"
                )
            self.consumer.assign([self.tp])
            self.first = (await self.consumer.beginning_offsets([self.tp]))[self.tp]
            self.end = (await self.consumer.end_offsets([self.tp]))[self.tp]
            # Known once assigned; hookstream makes dead-letter topics of one partition.
            partitions = self.consumer.partitions_for_topic(self.topic) or set()
            if partitions != {0}:
                raise DlqRefused(f"{self.topic} has {len(partitions)} partitions, not one")
        except BaseException:
            await self.consumer.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def read(self, start: int, stop: int) -> list[DeadLetter]:
        """The dead letters at offsets ``start`` ≤ o < ``stop``."""
        if start >= stop:
            return []
        self.consumer.seek(self.tp, start)
        letters: list[DeadLetter] = []
        while await self.consumer.position(self.tp) < stop:
            batch = await self.consumer.getmany(self.tp, timeout_ms=1000)
            letters.extend(
                DeadLetter(r.offset, r.timestamp, r.key, r.value, tuple(r.headers or ()))
                for r in batch.get(self.tp, [])
                if start <= r.offset < stop
            )
        return letters


async def _retry_state(settings: Settings, tp: TopicPartition) -> RetryState:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000
    )
    await admin.start()
    try:
        for attempt in range(10):
            try:
                committed = await admin.list_consumer_group_offsets(
                    retry_group(settings), partitions=[tp]
                )
                break
            except KafkaError as exc:
                # A broker just started may still be loading its group coordinator.
                if not exc.retriable or attempt == 9:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await admin.close()
    found = committed.get(tp)
    return RetryState.parse(found.offset, found.metadata) if found else RetryState()


async def list_dead_letters(settings: Settings, topic: str, fmt: str) -> str:
    async with _Log(settings, topic) as log:
        letters = await log.read(log.first, log.end)
    state = await _retry_state(settings, log.tp)
    result = list_table(letters, _now_ms(), state, retry_topics(settings))
    return render_list(result, fmt, shutil.get_terminal_size((120, 24)).columns)


async def show_dead_letter(settings: Settings, topic: str, offset: int) -> str:
    async with _Log(settings, topic) as log:
        if not log.first <= offset < log.end:
            raise DlqRefused(f"offset {offset} is not in {topic} ({holds(log.first, log.end)})")
        found = await log.read(offset, offset + 1)
    if not found:  # not a record: e.g. a transaction's marker
        raise DlqRefused(f"no record at offset {offset} of {topic}")
    return show_text(topic, found[0], _now_ms())


async def retry_dead_letters(
    settings: Settings, topic: str, offsets: Sequence[int], *, every: bool, force: bool
) -> str:
    """Send dead letters back to their processors, once; returns what was done."""
    topics = retry_topics(settings)
    async with _Log(settings, topic) as log:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id="hookstream-dlq-retry",
            transactional_id=f"{retry_group(settings)}-{topic}",
            acks="all",
            max_request_size=settings.max_record_bytes,
        )
        try:
            # Starting fences any earlier retry of this topic still running: its
            # transaction is aborted, so the mark read next is final.
            await producer.start()
            state = await _retry_state(settings, log.tp)
            plan = plan_retry(
                topic, state, log.first, log.end, offsets=offsets, every=every, force=force
            )
            if not plan.offsets and plan.state == state:
                done = "it is empty" if log.first >= log.end else "all retried"
                return f"nothing to retry in {topic}: {done}"
            letters = await log.read(plan.offsets[0], plan.offsets[-1] + 1) if plan.offsets else []
            wanted = set(plan.offsets)
            made = [retry_copy(topic, x, topics) for x in letters if x.offset in wanted]
            copies = [m for m in made if isinstance(m, RetryCopy)]
            refusals = [m for m in made if isinstance(m, Refusal)]
            if refusals and not every:
                raise DlqRefused(f"{topic}/{refusals[0].offset}: {refusals[0].reason}")
            needed = {c.topic for c in copies}
            await ensure_topics(
                settings.kafka_bootstrap, [s for s in topic_specs(settings) if s.name in needed]
            )
            async with producer.transaction():
                sent = []
                for c in copies:
                    sent.append(await producer.send(
                        c.topic, c.value, key=c.key, headers=c.headers, partition=c.partition
                    ))  # fmt: skip
                await asyncio.gather(*sent)  # a copy the broker refuses aborts them all
                mark = {log.tp: (plan.state.below, plan.state.metadata())}
                await producer.send_offsets_to_transaction(mark, retry_group(settings))
        finally:
            await producer.stop()
    return retry_report(topic, copies, refusals, plan.state.below)

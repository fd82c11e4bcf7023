"""``hookstream dlq``: the decisions and the formatting, without a broker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from deploy.dlq import (
    RETRY_OF_HEADER,
    DeadLetter,
    DlqRefused,
    Refusal,
    RetryCopy,
    RetryState,
    Source,
    fit_errors,
    human_age,
    list_table,
    plan_retry,
    retry_copy,
    retry_headers,
    retry_topics,
    show_text,
)
from processors.dead_letter import dead_letter_headers
from processors.records import processor_app
from processors.triggers.rules import TriggerFile
from projections.query import render
from schemas.envelope import RecordHeader
from schemas.settings import Settings
from schemas.topics import retry_sources, retry_topic, topic_specs

NOW_MS = 1_800_000_000_000
ORIGINAL = [(RecordHeader.EVENT, b"pull_request"), (RecordHeader.DELIVERY, b"d-1")]


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:1", **overrides)


def letter(
    offset: int = 0,
    *,
    original: list[tuple[str, bytes]] | None = None,
    processor: str = "insights",
    error: str = "ValidationError: 1 validation error for PullRequest\n  not an object",
    source: str = "github.events/2/41",
    age_s: float = 180,
    value: bytes = b'{"action": "opened", "pull_request": 5}',
) -> DeadLetter:
    headers = dead_letter_headers(
        ORIGINAL if original is None else original,
        processor=processor, error=error, source=source,
    )  # fmt: skip
    return DeadLetter(offset, NOW_MS - int(age_s * 1000), b"1", value, tuple(headers))


# --- names and topics -----------------------------------------------------------------------


def test_a_retry_topic_is_named_after_its_source_and_processor() -> None:
    assert retry_topic("github.events", "insights") == "github.events.retry.insights"
    assert retry_topic("hookstream.dispatch", "triggers") == "hookstream.dispatch.retry.triggers"


def test_a_record_failing_again_on_a_retry_topic_goes_back_to_the_same_retry_topic() -> None:
    assert retry_topic("github.events.retry.insights", "insights") == "github.events.retry.insights"


def test_retry_topics_are_created_partitioned_as_their_source_and_kept_like_dead_letters(
    tmp_path: Path,
) -> None:
    s = settings(tmp_path, events_partitions=6, dispatch_partitions=4)
    specs = {spec.name: spec for spec in topic_specs(s)}
    expected = {
        "github.events.retry.insights": 6, "github.events.retry.triggers": 6,
        "github.events.retry.checks": 6, "github.events.retry.identity": 6,
        "hookstream.dispatch.retry.triggers": 4, "hookstream.dispatch.retry.checks": 4,
    }  # fmt: skip
    assert {n: specs[n].partitions for n in expected} == expected
    for name in expected:
        assert specs[name].configs == specs[s.dlq_topic].configs
    assert retry_topics(s) == expected


def test_each_processor_reads_its_retry_topics_with_the_same_agent_as_the_source(
    tmp_path: Path,
) -> None:
    from processors.checks.app import create_app as checks_app
    from processors.identity.app import create_app as identity_app
    from processors.insights.app import create_app as insights_app
    from processors.triggers.app import create_app as triggers_app

    s = settings(tmp_path)
    apps = {
        "insights": lambda: insights_app(s),
        "triggers": lambda: triggers_app(s, TriggerFile(workflows={})),
        "checks": lambda: checks_app(s, None),
        "identity": lambda: identity_app(s),
    }

    async def channels(processor: str) -> list[tuple[str, ...]]:
        app = apps[processor]()
        return [tuple(agent.channel.topics) for agent in app.agents.values()]

    for source, _, processor in retry_sources(s):
        read = asyncio.run(channels(processor))
        assert (source, retry_topic(source, processor)) in read, (processor, read)


def test_workers_read_only_committed_records(tmp_path: Path) -> None:
    # Copies of a retry whose transaction was aborted must never reach an agent.
    async def isolation() -> str:
        app = processor_app(settings(tmp_path), "insights")
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # type: ignore[attr-defined]
        level: str = consumer._isolation_level
        return level

    assert asyncio.run(isolation()) == "read_committed"


# --- copies ---------------------------------------------------------------------------------


def test_a_copy_keeps_the_original_headers_drops_the_dead_letters_and_says_where_from() -> None:
    copied = retry_headers(letter().headers, "github.events.dlq/7")
    assert copied == [*ORIGINAL, (RETRY_OF_HEADER, b"github.events.dlq/7")]


def test_a_letter_retried_before_names_only_its_latest_dead_letter() -> None:
    again = letter(original=[*ORIGINAL, (RETRY_OF_HEADER, b"github.events.dlq/0")])
    assert retry_headers(again.headers, "github.events.dlq/3") == [
        *ORIGINAL, (RETRY_OF_HEADER, b"github.events.dlq/3"),
    ]  # fmt: skip


def test_a_copy_goes_to_the_source_partition_with_the_same_key_and_bytes(tmp_path: Path) -> None:
    dead = letter(5)
    copy = retry_copy("github.events.dlq", dead, retry_topics(settings(tmp_path)))
    assert isinstance(copy, RetryCopy)
    assert (copy.topic, copy.partition, copy.key, copy.value, copy.processor) == (
        "github.events.retry.insights", 2, b"1", dead.value, "insights",
    )  # fmt: skip


def test_a_dispatch_dead_letter_names_only_its_topic_and_goes_back_by_key(tmp_path: Path) -> None:
    dead = letter(
        original=[("x-hookstream-target", b"ci"), ("x-hookstream-attempts", b"5")],
        processor="triggers", error="HTTP 503", source="hookstream.dispatch",
    )  # fmt: skip
    copy = retry_copy("hookstream.dispatch.dlq", dead, retry_topics(settings(tmp_path)))
    assert isinstance(copy, RetryCopy)
    assert (copy.topic, copy.partition) == ("hookstream.dispatch.retry.triggers", None)
    # The target that failed travels along: only that one is owed the dispatch.
    assert ("x-hookstream-target", b"ci") in copy.headers


def test_a_dead_letter_without_a_retry_topic_is_refused_with_the_reason(tmp_path: Path) -> None:
    topics = retry_topics(settings(tmp_path))
    report = letter(processor="checks", source="hookstream.run-status/0/3")
    assert retry_copy("hookstream.checks.dlq", report, topics) == Refusal(
        0, "checks reads no retry topic for hookstream.run-status"
    )
    stranger = DeadLetter(4, NOW_MS, None, b"x", ())
    refused = retry_copy("github.events.dlq", stranger, topics)
    assert isinstance(refused, Refusal)
    assert "not a dead letter" in refused.reason


@pytest.mark.parametrize(("text", "source"), [
    ("github.events/2/41", Source("github.events", 2, 41)),
    ("github.events.retry.insights/0/0", Source("github.events.retry.insights", 0, 0)),
    ("hookstream.dispatch", Source("hookstream.dispatch")),
])  # fmt: skip
def test_a_source_is_read_from_its_header(text: str, source: Source) -> None:
    assert Source.parse(text) == source
    assert str(source) == text


# --- what was retried -----------------------------------------------------------------------


def test_retrying_everything_marks_up_to_the_end_of_the_log() -> None:
    plan = plan_retry("t", RetryState(2), 0, 6, offsets=[], every=True, force=False)
    assert plan.offsets == [2, 3, 4, 5]
    assert plan.state == RetryState(6)


def test_retrying_everything_skips_what_was_retried_one_by_one() -> None:
    state = RetryState(2, frozenset({4}))
    plan = plan_retry("t", state, 0, 6, offsets=[], every=True, force=False)
    assert plan.offsets == [2, 3, 5]
    assert plan.state == RetryState(6)


def test_retrying_one_record_marks_only_that_one() -> None:
    plan = plan_retry("t", RetryState(2), 0, 6, offsets=[4], every=False, force=False)
    assert plan.offsets == [4]
    assert plan.state == RetryState(2, frozenset({4}))
    assert plan.state.retried(4)
    assert not plan.state.retried(3)
    # The gap filled, the mark moves past both.
    assert plan.state.marking([2, 3]) == RetryState(5)


def test_a_record_retried_already_is_refused_unless_forced() -> None:
    with pytest.raises(DlqRefused, match=r"t/1 was retried already .*--force sends it again"):
        plan_retry("t", RetryState(2), 0, 6, offsets=[1], every=False, force=False)
    plan = plan_retry("t", RetryState(2), 0, 6, offsets=[1], every=False, force=True)
    assert (plan.offsets, plan.state) == ([1], RetryState(2))


@pytest.mark.parametrize(("offsets", "every", "force", "message"), [
    ([9], False, False, "offset 9 is not in t (it holds offsets 0 to 5)"),
    ([-1], False, False, "offset -1 is not in t"),
    ([1], True, False, "give --all or --offset N, not both"),
    ([], False, False, "give --offset N (repeatable) or --all"),
    ([], True, True, "--force goes with --offset"),
])  # fmt: skip
def test_bad_requests_are_refused_with_one_line(
    offsets: list[int], every: bool, force: bool, message: str
) -> None:
    with pytest.raises(DlqRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_retry("t", RetryState(), 0, 6, offsets=offsets, every=every, force=force)


def test_the_mark_survives_the_commit_metadata() -> None:
    state = RetryState(3, frozenset({5, 9}))
    assert state.metadata() == "retried:5,9"
    assert RetryState.parse(3, state.metadata()) == state
    assert RetryState.parse(None, "") == RetryState()
    assert RetryState.parse(-1, None) == RetryState()


# --- presenting -----------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s"), (-5, "0 s"), (59.9, "59 s"), (60, "1 min"), (180, "3 min"), (3599, "59 min"),
    (7200, "2 h"), (86_399, "23 h"), (86_400, "1 d"), (10 * 86_400, "10 d"),
])  # fmt: skip
def test_ages_are_whole_human_units(seconds: float, text: str) -> None:
    assert human_age(seconds) == text


def test_list_rows_say_what_failed_where_and_whether_it_was_retried(tmp_path: Path) -> None:
    letters = [
        letter(0),
        letter(1, source="github.events.retry.insights/2/0", age_s=7200,
               original=[*ORIGINAL, (RETRY_OF_HEADER, b"github.events.dlq/0")]),
        letter(2, original=[], processor="checks", source="hookstream.run-status/0/1",
               error="ValueError: bad"),
    ]  # fmt: skip
    result = list_table(letters, NOW_MS, RetryState(1), retry_topics(settings(tmp_path)))
    assert result.columns == [
        "offset", "age", "processor", "source", "delivery", "event", "retried", "error",
    ]  # fmt: skip
    first_error = "ValidationError: 1 validation error for PullRequest"
    assert result.rows == [
        [0, "3 min", "insights", "github.events/2/41", "d-1", "pull_request", "yes", first_error],
        [1, "2 h", "insights", "github.events.retry.insights/2/0", "d-1", "pull_request", "no",
         first_error],
        [2, "3 min", "checks", "hookstream.run-status/0/1", None, None, "n/a", "ValueError: bad"],
    ]  # fmt: skip


def test_the_table_cuts_the_error_to_fit_the_terminal(tmp_path: Path) -> None:
    long = letter(error="RuntimeError: " + "x" * 300)
    result = list_table([long], NOW_MS, RetryState(), retry_topics(settings(tmp_path)))
    lines = render(fit_errors(result, 120), "table").splitlines()
    assert max(len(line) for line in lines) == 120
    assert lines[2].endswith("x…")
    # Other formats keep the whole first line.
    assert "x" * 300 in render(result, "csv")


def test_show_prints_every_header_the_whole_error_and_the_body_as_json() -> None:
    text = show_text("github.events.dlq", letter(3), NOW_MS)
    assert text.splitlines()[:3] == [
        "github.events.dlq/3: dead-lettered 2027-01-15T07:57:00+00:00 (3 min ago)",
        "key: 1",
        "headers:",
    ]
    assert "  x-github-delivery: d-1" in text
    assert "  x-hookstream-error: ValidationError: 1 validation error for PullRequest\n" \
           "      not an object" in text  # fmt: skip
    assert "  x-hookstream-source: github.events/2/41" in text
    body = text.split("body: 39 bytes, JSON\n", 1)[1]
    assert orjson.loads(body) == {"action": "opened", "pull_request": 5}
    assert body.startswith('{\n  "action"')


def test_show_keeps_bytes_that_are_not_text_safe() -> None:
    hostile = DeadLetter(
        0, NOW_MS, None, b"\xff not json \x1b[31m",
        (("x-note", b"\x1b]0;owned\x07"), (RecordHeader.CONTENT_TYPE, b"application/json")),
    )  # fmt: skip
    text = show_text("github.events.dlq", hostile, NOW_MS)
    assert "\x1b" not in text
    assert "key: none" in text
    assert "x-note: b'\\x1b]0;owned\\x07'" in text
    assert text.endswith("body: 16 bytes, not JSON\nb'\\xff not json \\x1b[31m'")


def test_show_reads_the_json_inside_a_form_encoded_body() -> None:
    form = DeadLetter(
        0, NOW_MS, None, b"payload=%7B%22zen%22%3A+%22ok%22%7D",
        ((RecordHeader.CONTENT_TYPE, b"application/x-www-form-urlencoded"),),
    )  # fmt: skip
    text = show_text("github.events.dlq", form, NOW_MS)
    assert "form-encoded, its payload field as JSON\n{\n" in text
    assert '"zen": "ok"' in text

"""Row extraction over the corpus: what each delivery writes, and what it refuses."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from urllib.parse import urlencode

import orjson
import pytest
from pydantic import ValidationError

from deploy.corpus import Example
from processors.insights.rows import insight_rows
from projections.schema import MIGRATIONS
from schemas.envelope import Envelope, RecordHeader
from tests.helpers import sample, sample_names

RECEIVED = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)


def envelope(event: str, body: bytes, form: bool = False, delivery: str = "d-1") -> Envelope:
    content_type = "application/x-www-form-urlencoded" if form else "application/json"
    if form:
        body = urlencode({"payload": body.decode()}).encode()
    return Envelope.from_record(
        [(RecordHeader.EVENT, event.encode()), (RecordHeader.DELIVERY, delivery.encode()),
         (RecordHeader.HOOK_ID, b"7"), (RecordHeader.CONTENT_TYPE, content_type.encode()),
         (RecordHeader.RECEIVED_AT, RECEIVED.isoformat().encode())],
        body,
    )  # fmt: skip


def table_columns() -> dict[str, list[str]]:
    """Column names per table, read from the DDL, to check rows fit their tables."""
    columns: dict[str, list[str]] = {}
    for statement in MIGRATIONS[0].statements:
        name = statement.split("EXISTS ", 1)[1].split(" ", 1)[0]
        body = statement.split("(", 1)[1].rsplit(") ENGINE", 1)[0]
        columns[name] = [line.strip().split(" ")[0] for line in body.split(",\n") if line.strip()]
    return columns


def assert_rows_fit(example: Example) -> None:
    """One ``deliveries`` row, and every row fits its table's columns."""
    columns = table_columns()
    for form in (False, True):
        rows = insight_rows(envelope(example.event, example.body, form))
        [delivery] = rows.tables["deliveries"]
        assert delivery["delivery_id"] == "d-1"
        assert delivery["hook_id"] == "7"
        assert delivery["event"] == example.event
        assert delivery["action"] == (example.action or "")
        assert orjson.loads(delivery["payload"]) == example.payload
        for table, table_rows in rows.tables.items():
            for row in table_rows:
                assert sorted(row) == sorted(columns[table]), (example.name, table)
                assert row["delivery_id"] == "d-1"


@pytest.mark.parametrize("name", sample_names())
def test_every_sample_makes_one_deliveries_row_and_fitting_rows(name: str) -> None:
    assert_rows_fit(sample(name))


def test_pull_request_rows_follow_the_payload() -> None:
    example = sample("pull_request.opened")
    pr = example.payload["pull_request"]
    [row] = insight_rows(envelope("pull_request", example.body)).tables["pull_requests"]
    assert (row["number"], row["author_login"], row["head_ref"], row["base_ref"]) == (
        pr["number"], pr["user"]["login"], pr["head"]["ref"], pr["base"]["ref"],
    )  # fmt: skip
    assert row["repository"] == example.payload["repository"]["full_name"]
    assert row["repository_id"] == example.payload["repository"]["id"]
    assert row["sender_id"] == example.payload["sender"]["id"]
    assert row["merged_at"] is None
    assert row["received_at"] == RECEIVED


def test_push_rows_are_commits_with_the_push_time() -> None:
    example = sample("push#5")
    payload = example.payload
    rows = insight_rows(envelope("push", example.body)).tables["commits"]
    assert [r["sha"] for r in rows] == [c["id"] for c in payload["commits"]]
    assert rows[0]["ref"] == payload["ref"]
    assert rows[0]["pushed_at"] == datetime.fromtimestamp(payload["repository"]["pushed_at"], UTC)


def test_review_rows_know_bots_and_authors() -> None:
    example = sample("pull_request_review.submitted")
    payload = copy.deepcopy(example.payload)
    payload["review"]["user"] = {"id": 99, "login": "renovate[bot]", "type": "Bot"}
    rows = insight_rows(envelope("pull_request_review", orjson.dumps(payload)))
    [review] = rows.tables["pull_request_reviews"]
    assert (review["reviewer_is_bot"], review["reviewer_login"]) == (1, "renovate[bot]")
    assert review["pr_author_id"] == payload["pull_request"]["user"]["id"]


def test_unknown_events_still_land_in_deliveries() -> None:
    rows = insight_rows(envelope("brand_new_event", b'{"action": "happened"}'))
    assert list(rows.tables) == ["deliveries"]
    assert rows.tables["deliveries"][0]["action"] == "happened"


@pytest.mark.parametrize(
    ("event", "body"),
    [
        ("pull_request", b'{"action": "opened", "number": 1, "pull_request": 5}'),
        ("deployment_status", b'{"action": "created", "deployment": {}}'),
        ("push", b'{"ref": "refs/heads/x", "commits": [{"id": "a"}]}'),
    ],
)
def test_payloads_that_do_not_fit_raise(event: str, body: bytes) -> None:
    with pytest.raises(ValidationError):
        insight_rows(envelope(event, body))

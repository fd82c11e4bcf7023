"""The replay's pure parts: its plan line, progress, stall detection, the table swap."""

from __future__ import annotations

from deploy.replay import Progress, Range, ReplayPlan, stalled_message
from processors.offsets import PartitionOffsets, reached, split_partition_name
from projections.rebuild import SUFFIX, fact_tables, prepare_statements, swap_statements

PLAN = ReplayPlan(
    "insights",
    "hookstream-insights",
    (Range("github.events/0", 0, 100), Range("github.events/1", 10, 60),
     Range("hookstream.identity/0", 0, 0)),
    ("deliveries", "pull_requests"),
)  # fmt: skip


def offsets(*committed: int | None) -> list[PartitionOffsets]:
    names = [r.partition for r in PLAN.ranges]
    return [
        PartitionOffsets(*split_partition_name(name), committed=c, end=r.end)
        for name, c, r in zip(names, committed, PLAN.ranges, strict=True)
    ]


def test_the_first_line_names_topics_ranges_group_and_tables() -> None:
    assert PLAN.records == 150
    assert PLAN.describe() == (
        "replay insights: 150 records of github.events [0:0..100, 1:10..60]; "
        "hookstream.identity [0:0..0] with consumer group hookstream-insights; "
        "tables deliveries, pull_requests rebuilt as <table>__replay, then swapped in; "
        "effects off"
    )
    resumed = ReplayPlan.from_json(PLAN.to_json())
    assert resumed.resumed
    assert (resumed.ranges, resumed.horizon) == (PLAN.ranges, PLAN.horizon)
    assert resumed.describe().startswith("resume replay insights: 150 records")


def test_progress_counts_records_rate_and_eta() -> None:
    progress = Progress(PLAN, stall_s=30, started=0.0)
    assert progress.update(offsets(None, None, None), now=0.0) == []
    assert progress.update(offsets(50, 35, None), now=10.0) == []
    assert (progress.done, progress.rate, progress.eta_s) == (75, 7.5, 10.0)
    assert progress.line(width=10) == "[#####.....]  50.0% 75/150 records 8/s ETA 00:00:10"


def test_a_worker_that_never_starts_reading_is_stalled_after_the_start_grace() -> None:
    progress = Progress(PLAN, stall_s=30, started=0.0, start_grace_s=60)
    assert progress.update(offsets(None, None, None), now=0.0) == []
    assert progress.update(offsets(None, None, None), now=89.0) == []
    assert progress.update(offsets(None, None, None), now=90.0) == [
        ("github.events/0", 100, 90.0), ("github.events/1", 50, 90.0)]  # fmt: skip


def test_a_partition_with_lag_and_no_progress_is_stalled_after_the_limit() -> None:
    progress = Progress(PLAN, stall_s=30, started=0.0)
    progress.update(offsets(0, 10, None), now=-1.0)
    progress.update(offsets(40, 20, None), now=0.0)
    assert progress.update(offsets(60, 20, None), now=20.0) == []
    # github.events/1 has not moved for 30 s with 40 records to go; /0 moved at 20 s.
    assert progress.update(offsets(70, 20, None), now=30.0) == [("github.events/1", 40, 30.0)]
    # A partition read to its end is never stalled, however long it stays there.
    assert progress.update(offsets(100, 60, None), now=100.0) == []
    assert progress.update(offsets(100, 60, None), now=500.0) == []
    message = stalled_message(PLAN, [("github.events/1", 40, 30.0)])
    assert "github.events/1 (lag 40, no progress for 30 s)" in message
    assert "hookstream replay insights" in message


def test_the_horizon_is_reached_when_every_partition_is_committed_to_its_end() -> None:
    assert not reached(offsets(100, 59, None), PLAN.horizon)
    assert not reached(offsets(100, None, None), PLAN.horizon)
    assert reached(offsets(100, 60, None), PLAN.horizon)  # an empty partition needs nothing


def test_the_swap_exchanges_every_fact_table_then_drops_the_old_data() -> None:
    tables = fact_tables()
    assert {"deliveries", "pull_requests", "identities"} <= set(tables)
    assert "schema_migrations" not in tables
    assert prepare_statements(fresh=False) == [
        f"CREATE TABLE IF NOT EXISTS {t}{SUFFIX} AS {t}" for t in tables
    ]
    assert prepare_statements(fresh=True)[0] == f"DROP TABLE IF EXISTS {tables[0]}{SUFFIX}"
    swap = swap_statements()
    assert swap[: len(tables)] == [f"EXCHANGE TABLES {t} AND {t}{SUFFIX}" for t in tables]
    assert swap[len(tables) :] == [f"DROP TABLE {t}{SUFFIX}" for t in tables]

"""The watchdog's decision: progress, stalls, and one warning per stall."""

from __future__ import annotations

from processors.offsets import PartitionOffsets
from processors.watchdog import Progress, observe

WARN_AFTER = 30.0


def offsets(committed: int | None, end: int) -> PartitionOffsets:
    return PartitionOffsets("github.events", 2, committed, end)


def test_the_first_look_is_progress_even_with_lag() -> None:
    verdict = observe(None, offsets(None, 40), now=100.0, warn_after_s=WARN_AFTER)
    assert verdict.progress == Progress(None, 40, 100.0)
    assert (verdict.stalled_s, verdict.warn) == (0.0, False)


def test_a_moving_committed_offset_is_progress() -> None:
    before = Progress(10, 40, 100.0)
    verdict = observe(before, offsets(12, 45), now=500.0, warn_after_s=WARN_AFTER)
    assert verdict.progress == Progress(12, 45, 500.0)
    assert not verdict.warn


def test_nothing_to_read_is_never_a_stall() -> None:
    before = Progress(40, 40, 100.0)
    verdict = observe(before, offsets(40, 40), now=10_000.0, warn_after_s=WARN_AFTER)
    assert (verdict.stalled_s, verdict.warn) == (0.0, False)


def test_lag_without_progress_warns_once_after_the_limit() -> None:
    progress = Progress(10, 40, 100.0)
    quiet = observe(progress, offsets(10, 41), now=129.0, warn_after_s=WARN_AFTER)
    assert (quiet.stalled_s, quiet.warn) == (29.0, False)
    loud = observe(quiet.progress, offsets(10, 42), now=131.0, warn_after_s=WARN_AFTER)
    assert (loud.stalled_s, loud.warn) == (31.0, True)
    again = observe(loud.progress, offsets(10, 43), now=200.0, warn_after_s=WARN_AFTER)
    assert (again.stalled_s, again.warn) == (100.0, False)  # still stalled, said once
    assert again.progress.end == 43


def test_a_stall_that_ends_warns_again_next_time() -> None:
    stalled = Progress(10, 40, 100.0, warned=True)
    moving = observe(stalled, offsets(11, 40), now=300.0, warn_after_s=WARN_AFTER)
    assert moving.progress == Progress(11, 40, 300.0, warned=False)
    later = observe(moving.progress, offsets(11, 50), now=331.0, warn_after_s=WARN_AFTER)
    assert later.warn


def test_lag_counts_a_never_committed_partition_from_zero() -> None:
    assert offsets(None, 7).lag == 7
    assert offsets(7, 7).lag == 0


def test_a_worker_whose_consumer_has_not_started_owns_nothing_yet() -> None:
    # The first look can come before Faust's consumer thread runs (a slow start).
    from types import SimpleNamespace

    from faust.exceptions import ConsumerNotStarted
    from prometheus_client import CollectorRegistry

    from processors.watchdog import Watchdog
    from schemas.settings import Settings

    def not_started() -> set[object]:
        raise ConsumerNotStarted("Consumer thread not yet started")

    app = SimpleNamespace(consumer=SimpleNamespace(assignment=not_started))
    watchdog = Watchdog(app, Settings(), "triggers", CollectorRegistry())  # type: ignore[arg-type]
    assert watchdog.owned_partitions() == set()

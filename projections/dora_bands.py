"""DORA performance bands (elite, high, medium, low) for the four keys.

The thresholds are those of the *Accelerate State of DevOps 2021* report's table of
software delivery performance, read so that the bands meet: the report leaves gaps
(lead time: elite "less than one hour", high "between one day and one week") and puts
high, medium and low change failure rates all at 16-30 %. Each band here runs from its
published lower edge to the next band's, and change failure rate uses the 15-point steps
of the report's earlier editions (0-15, 16-30, 31-45, 46 % and up). The README states the
table; a change here is a change to what users read on the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

HOUR = 3600.0
DAY = 24 * HOUR
WEEK = 7 * DAY
SIX_MONTHS = 182 * DAY


class Band(StrEnum):
    ELITE = "elite"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Metric(StrEnum):
    """The four keys, named as the page's ``data-metric`` attributes (DESIGN.md §10)."""

    DEPLOYMENT_FREQUENCY = "deployment_frequency"
    LEAD_TIME = "lead_time"
    CHANGE_FAILURE_RATE = "change_failure_rate"
    TIME_TO_RESTORE = "time_to_restore"


@dataclass(frozen=True)
class Thresholds:
    """Edges between elite|high, high|medium and medium|low, in the metric's unit."""

    edges: tuple[float, float, float]
    higher_is_better: bool

    def band(self, value: float) -> Band:
        for edge, band in zip(self.edges, (Band.ELITE, Band.HIGH, Band.MEDIUM), strict=True):
            if (value >= edge) if self.higher_is_better else (value < edge):
                return band
        return Band.LOW


THRESHOLDS: dict[Metric, Thresholds] = {
    # Deployments per day: daily or more; at least monthly; at least every six months.
    Metric.DEPLOYMENT_FREQUENCY: Thresholds((1.0, 1 / 30, 1 / 182), higher_is_better=True),
    # Seconds: under an hour; under a week; under six months.
    Metric.LEAD_TIME: Thresholds((HOUR, WEEK, SIX_MONTHS), higher_is_better=False),
    # A 0-1 ratio: at most 15 %, 30 %, 45 % (an upper edge is inclusive, hence the nudge).
    Metric.CHANGE_FAILURE_RATE: Thresholds((0.15 + 1e-9, 0.30 + 1e-9, 0.45 + 1e-9), False),
    # Seconds: under an hour; under a day; under a week.
    Metric.TIME_TO_RESTORE: Thresholds((HOUR, DAY, WEEK), higher_is_better=False),
}


def band(metric: Metric, value: float | None) -> Band | None:
    """The band of a value; None when there is no value to judge."""
    return None if value is None else THRESHOLDS[metric].band(value)

"""The insights page's pure parts: filters, DORA bands, the queries it may run, the report."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import pytest

from deploy.dev import banner
from projections.dora_bands import DAY, HOUR, WEEK, Band, Metric, band
from projections.insights_report import (
    FilterError,
    Patterns,
    ReportFilters,
    build_report,
    report_queries,
)
from projections.query import QueryResult
from schemas.settings import Settings

TODAY = date(2026, 11, 26)
PATTERNS = Patterns("^(prod|production)$", "(?i)^incident$")


def test_the_default_window_is_the_last_90_days_through_today() -> None:
    filters = ReportFilters.parse({}, TODAY)
    assert (filters.repository, filters.start, filters.end, filters.days) == (
        None, date(2026, 8, 29), TODAY, 90)  # fmt: skip
    only_to = ReportFilters.parse({"to": "2026-03-31"}, TODAY)
    assert (only_to.start, only_to.days) == (date(2026, 1, 1), 90)


def test_weeks_are_the_mondays_the_window_touches() -> None:
    filters = ReportFilters.parse({"from": "2026-03-01", "to": "2026-03-16"}, TODAY)
    assert filters.weeks() == [date(2026, 2, 23), date(2026, 3, 2), date(2026, 3, 9),
                               date(2026, 3, 16)]  # fmt: skip
    one_day = ReportFilters.parse({"from": "2026-03-04", "to": "2026-03-04"}, TODAY)
    assert one_day.weeks() == [date(2026, 3, 2)]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"repository": "acme"}, "repository must be owner/name, got 'acme'"),
        ({"repository": "acme/api' OR 1=1 --"}, "repository must be owner/name"),
        ({"from": "yesterday"}, "from must be an ISO date (YYYY-MM-DD), got 'yesterday'"),
        ({"to": "2026-02-30"}, "to must be an ISO date"),
        ({"from": "2026-03-02", "to": "2026-03-01"}, "from (2026-03-02) is after to (2026-03-01)"),
        ({"days": "7"}, "unknown parameter 'days': the filters are repository, from, to"),
        ({"from": "2010-01-01", "to": "2026-01-01"}, "longer than 3660 days"),
    ],
)
def test_bad_filters_name_the_parameter(params: dict[str, str], message: str) -> None:
    with pytest.raises(FilterError) as raised:
        ReportFilters.parse(params, TODAY)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("metric", "value", "expected"),
    [
        (Metric.DEPLOYMENT_FREQUENCY, 3.0, Band.ELITE),
        (Metric.DEPLOYMENT_FREQUENCY, 1.0, Band.ELITE),
        (Metric.DEPLOYMENT_FREQUENCY, 0.99, Band.HIGH),
        (Metric.DEPLOYMENT_FREQUENCY, 1 / 30, Band.HIGH),
        (Metric.DEPLOYMENT_FREQUENCY, 1 / 31, Band.MEDIUM),
        (Metric.DEPLOYMENT_FREQUENCY, 1 / 182, Band.MEDIUM),
        (Metric.DEPLOYMENT_FREQUENCY, 0.0, Band.LOW),
        (Metric.LEAD_TIME, HOUR - 1, Band.ELITE),
        (Metric.LEAD_TIME, HOUR, Band.HIGH),
        (Metric.LEAD_TIME, WEEK - 1, Band.HIGH),
        (Metric.LEAD_TIME, WEEK, Band.MEDIUM),
        (Metric.LEAD_TIME, 200 * DAY, Band.LOW),
        (Metric.CHANGE_FAILURE_RATE, 0.0, Band.ELITE),
        (Metric.CHANGE_FAILURE_RATE, 0.15, Band.ELITE),
        (Metric.CHANGE_FAILURE_RATE, 0.16, Band.HIGH),
        (Metric.CHANGE_FAILURE_RATE, 0.30, Band.HIGH),
        (Metric.CHANGE_FAILURE_RATE, 0.45, Band.MEDIUM),
        (Metric.CHANGE_FAILURE_RATE, 0.5, Band.LOW),
        (Metric.TIME_TO_RESTORE, 59 * 60, Band.ELITE),
        (Metric.TIME_TO_RESTORE, 3.5 * HOUR, Band.HIGH),
        (Metric.TIME_TO_RESTORE, DAY, Band.MEDIUM),
        (Metric.TIME_TO_RESTORE, WEEK, Band.LOW),
    ],
)
def test_bands_follow_the_published_thresholds(
    metric: Metric, value: float, expected: Band
) -> None:
    assert band(metric, value) is expected


def test_no_value_has_no_band() -> None:
    assert band(Metric.LEAD_TIME, None) is None


VIEWS = {"deliveries", "dora_deployments", "dora_incidents", "dora_deployment_frequency",
         "dora_lead_time", "dora_deployment_outcomes", "dora_time_to_restore", "pr_flow",
         "ci_runs"}  # fmt: skip


def test_the_queries_read_only_the_views_and_quote_the_repository() -> None:
    filters = ReportFilters(None, date(2026, 3, 1), date(2026, 3, 31))
    for sql in report_queries(filters).values():
        sources = set(re.findall(r"\bFROM\s+([a-z_]+)", sql))
        assert sources, sql
        assert sources <= VIEWS, sql  # no base table: the views hold every definition
    quoted = ReportFilters("o'hara/x", date(2026, 3, 1), date(2026, 3, 31))
    assert all("repository = 'o\\'hara/x'" in sql for sql in report_queries(quoted).values())


def result(columns: str, *rows: tuple[Any, ...]) -> QueryResult:
    return QueryResult(columns.split(), [list(row) for row in rows])


def empty_results(**overrides: QueryResult) -> dict[str, QueryResult]:
    results = {
        "events": result("repository events"),
        "seen": result("repository what n"),
        "deployment_frequency": result("repository week deployments"),
        "lead_time": result("repository week median_seconds changes"),
        "change_failure_rate": result(
            "repository week deployments failed_deployments change_failure_rate"
        ),
        "time_to_restore": result("repository week median_seconds incidents"),
        "flow": result(
            "pull_requests coding_seconds pickup_seconds review_seconds deploy_seconds oldest_open",
            (0, None, None, None, None, []),
        ),
        "ci": result("repository workflow runs successes success_rate p50_seconds p90_seconds"),
    }
    return results | overrides


FILTERS = ReportFilters(None, date(2026, 3, 1), date(2026, 3, 31))


def test_an_empty_store_reports_nothing_and_says_what_to_subscribe_to() -> None:
    report = build_report(FILTERS, empty_results(), PATTERNS)
    assert (report["repositories"], report["dora"]) == ([], [])
    assert report["flow"]["missing"].startswith("No pull_request deliveries yet: subscribe")
    assert report["ci"]["missing"].startswith("No workflow_run deliveries yet: subscribe")


def test_deployments_that_never_match_the_pattern_are_explained() -> None:
    results = empty_results(events=result("repository events", ("acme/x", ["deployment_status"])))
    [row] = build_report(FILTERS, results, PATTERNS)["dora"]
    frequency = row["deployment_frequency"]
    assert frequency["value"] is None  # not 0: nothing that could count has been seen
    assert "HOOKSTREAM_PRODUCTION_PATTERN (^(prod|production)$)" in frequency["missing"]
    assert row["lead_time"]["missing"] == frequency["missing"]


def test_values_trends_and_nan_read_as_numbers_or_missing() -> None:
    week = date(2026, 3, 2)
    results = empty_results(
        events=result("repository events", ("acme/x", ["deployment_status", "issues"])),
        seen=result("repository what n", ("acme/x", "deployments", 4)),
        deployment_frequency=result(
            "repository week deployments", ("acme/x", None, 4), ("acme/x", week, 4)
        ),
        change_failure_rate=result(
            "repository week deployments failed_deployments change_failure_rate",
            ("acme/x", None, 4, 0, 0.0),
            ("acme/x", week, 4, 0, float("nan")),
        ),
    )
    [row] = build_report(FILTERS, results, PATTERNS)["dora"]
    assert row["deployment_frequency"] | {"trend": None} == {
        "value": 4 / 31, "band": "high", "count": 4, "trend": None, "missing": None, "note": None,
    }  # fmt: skip
    assert row["deployment_frequency"]["trend"] == [0.0, 4.0, 0.0, 0.0, 0.0, 0.0]
    assert row["change_failure_rate"]["trend"][1] is None  # NaN never reaches the page
    assert row["change_failure_rate"]["note"] == (
        "No incident yet: an incident is an issue with a label matching "
        "HOOKSTREAM_INCIDENT_PATTERN ((?i)^incident$)."
    )
    assert row["time_to_restore"]["missing"] == row["change_failure_rate"]["note"]


def test_make_run_prints_the_insights_page_url() -> None:
    text = banner(Settings(query_port=9124), b"s3cret", b"t0ken")
    assert "  insights page:  http://127.0.0.1:9124/insights\n" in text
    assert "webhook secret: s3cret" in text

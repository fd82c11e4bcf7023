"""What the insights page shows, as data: filters in, SQL over the §6 views, a report out.

Pure: :class:`ReportFilters` parses the page's query parameters, :func:`report_queries`
writes the SQL, and :func:`build_report` turns the answers into the JSON document served
at ``GET /insights/api/dora`` (the page draws exactly that document). Every number is an
aggregate of a §6 view over the chosen window, with the views' own aggregate expressions
where a view defines one, so the page adds no definitions of its own.

Windows (inclusive UTC dates): deployments by ``deployed_at``, changes by the deployment
that shipped them, incidents by ``opened_at``, pull requests by ``opened_at``, CI runs by
``run_started_at``. Medians are ``quantileExactInclusive(0.5)``: the mean of the two
middle values when there is an even number of them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from projections.dora_bands import Metric, band
from projections.query import QueryResult
from projections.views import CHANGE_FAILURE_AGGREGATES, CI_AGGREGATES, sql_string
from schemas.errors import HookstreamError

DEFAULT_DAYS = 90
MAX_DAYS = 3660
SLOWEST_OPEN = 10
MEDIAN = "quantileExactInclusive"
REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
PARAMETERS = ("repository", "from", "to")


class FilterError(HookstreamError):
    """A query parameter the page cannot use; the message names it."""


@dataclass(frozen=True)
class ReportFilters:
    """``repository`` (``owner/name``, None = all) and an inclusive window of UTC dates."""

    repository: str | None
    start: date
    end: date

    @classmethod
    def parse(cls, params: Mapping[str, str], today: date) -> ReportFilters:
        unknown = sorted(set(params) - set(PARAMETERS))
        if unknown:
            raise FilterError(
                f"unknown parameter {unknown[0]!r}: the filters are {', '.join(PARAMETERS)}"
            )
        repository = params.get("repository") or None
        if repository is not None and not REPOSITORY.fullmatch(repository):
            raise FilterError(f"repository must be owner/name, got {repository!r}")
        end = _date(params, "to") or today
        start = _date(params, "from") or end - timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            raise FilterError(f"from ({start}) is after to ({end})")
        if (end - start).days + 1 > MAX_DAYS:
            raise FilterError(f"the window is longer than {MAX_DAYS} days")
        return cls(repository, start, end)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def weeks(self) -> list[date]:
        """The Mondays of the weeks the window touches, oldest first."""
        monday = self.start - timedelta(days=self.start.weekday())
        return [monday + timedelta(weeks=i) for i in range((self.end - monday).days // 7 + 1)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "days": self.days,
        }


def _date(params: Mapping[str, str], name: str) -> date | None:
    raw = params.get(name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise FilterError(f"{name} must be an ISO date (YYYY-MM-DD), got {raw!r}") from None


# --- the SQL --------------------------------------------------------------------------------
def _in_window(filters: ReportFilters, column: str) -> str:
    where = (
        f"toDate({column}) BETWEEN toDate('{filters.start.isoformat()}') "
        f"AND toDate('{filters.end.isoformat()}')"
    )
    if filters.repository is not None:
        where += f" AND repository = {sql_string(filters.repository)}"
    return where


def _per_week_and_window(select: str, view: str, column: str, filters: ReportFilters) -> str:
    """One row per (repository, week) and one per repository (``week`` NULL): the window."""
    # A Nullable key is NULL in the rows of the sets that leave it out (no setting needed,
    # and the read-only path may not change settings).
    return f"""SELECT repository, toNullable(toMonday({column})) AS week, {select}
FROM {view} WHERE {_in_window(filters, column)}
GROUP BY GROUPING SETS ((repository, week), (repository))"""


@dataclass(frozen=True)
class KeySource:
    """Where one key's numbers come from: its view, the time the window applies to, the
    aggregates, and which of their columns is the value and which the count."""

    view: str
    time: str
    select: str
    value: str
    count: str


KEYS: dict[Metric, KeySource] = {
    Metric.DEPLOYMENT_FREQUENCY: KeySource(
        "dora_deployment_frequency", "day", "sum(deployments) AS deployments",
        value="deployments", count="deployments",
    ),
    Metric.LEAD_TIME: KeySource(
        "dora_lead_time", "deployed_at",
        f"{MEDIAN}(0.5)(lead_time_seconds) AS median_seconds, count() AS changes",
        value="median_seconds", count="changes",
    ),
    Metric.CHANGE_FAILURE_RATE: KeySource(
        "dora_deployment_outcomes", "deployed_at", CHANGE_FAILURE_AGGREGATES,
        value="change_failure_rate", count="deployments",
    ),
    Metric.TIME_TO_RESTORE: KeySource(
        "dora_time_to_restore", "opened_at",
        f"{MEDIAN}(0.5)(restore_seconds) AS median_seconds, count() AS incidents",
        value="median_seconds", count="incidents",
    ),
}  # fmt: skip


def report_queries(filters: ReportFilters) -> dict[str, str]:
    """The queries behind one report, by name; all read-only, all over §6 views."""
    repository = ""
    if filters.repository is not None:
        repository = f" AND repository = {sql_string(filters.repository)}"
    return {
        # Which repositories exist and which events each has sent: what is missing and why.
        "events": "SELECT repository, groupUniqArray(event) AS events FROM deliveries "
        f"WHERE repository != ''{repository} GROUP BY repository ORDER BY repository",
        "seen": "SELECT repository, 'deployments' AS what, count() AS n FROM dora_deployments "
        f"WHERE 1{repository} GROUP BY repository UNION ALL "
        "SELECT repository, 'incidents' AS what, count() AS n FROM dora_incidents "
        f"WHERE 1{repository} GROUP BY repository",
        **{
            metric: _per_week_and_window(key.select, key.view, key.time, filters)
            for metric, key in KEYS.items()
        },
        # One pass over pr_flow: the window's stage medians and the oldest open PRs.
        "flow": f"""SELECT countIf(in_window) AS pull_requests,
       {MEDIAN}If(0.5)(coding_seconds, in_window) AS coding_seconds,
       {MEDIAN}If(0.5)(pickup_seconds, in_window) AS pickup_seconds,
       {MEDIAN}If(0.5)(review_seconds, in_window) AS review_seconds,
       {MEDIAN}If(0.5)(deploy_seconds, in_window) AS deploy_seconds,
       groupArraySortedIf({SLOWEST_OPEN})(
           (opened_at, repository, pr_number, title, author_login), state = 'open') AS oldest_open
FROM (SELECT *, {_in_window(filters, "opened_at")} AS in_window FROM pr_flow
      WHERE 1{repository})""",
        "ci": f"SELECT repository, workflow, {CI_AGGREGATES} FROM ci_runs "
        f"WHERE {_in_window(filters, 'started_at')} "
        "GROUP BY repository, workflow ORDER BY repository, workflow",
    }


# --- the report -----------------------------------------------------------------------------
@dataclass
class KeyFigure:
    """One tile: a key for one repository over the window, with its weekly trend."""

    value: float | None
    count: int
    trend: list[float | None]
    missing: str | None = None
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, metric: Metric) -> dict[str, Any]:
        judged = band(metric, self.value)
        return {
            "value": self.value,
            "band": None if judged is None else judged.value,
            "count": self.count,
            "trend": self.trend,
            "missing": self.missing,
            "note": self.note,
            **self.extra,
        }


@dataclass(frozen=True)
class Patterns:
    """The settings that decide what counts, named in the page's explanations."""

    production: str
    incident: str


def _rows(result: QueryResult) -> list[dict[str, Any]]:
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if number != number else number  # NaN (0/0) reads as "no value"


def _split(
    rows: list[dict[str, Any]],
) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, date], dict[str, Any]]]:
    totals: dict[str, dict[str, Any]] = {}
    weekly: dict[tuple[str, date], dict[str, Any]] = {}
    for row in rows:
        week = row["week"]
        if week is None:
            totals[row["repository"]] = row
        else:
            weekly[(row["repository"], _as_date(week))] = row
    return totals, weekly


def _as_date(value: date | datetime | str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def build_report(
    filters: ReportFilters, results: Mapping[str, QueryResult], patterns: Patterns
) -> dict[str, Any]:
    """The document of ``GET /insights/api/dora``, from the answers to :func:`report_queries`."""
    events = {row["repository"]: set(row["events"]) for row in _rows(results["events"])}
    seen: dict[tuple[str, str], int] = {
        (row["repository"], row["what"]): int(row["n"]) for row in _rows(results["seen"])
    }
    weeks = filters.weeks()
    explain = _Explain(events, seen, patterns, filters)
    by_metric = {metric: _split(_rows(results[metric])) for metric in Metric}
    dora = []
    for repository in sorted(events):
        figures = {
            metric: _figure(metric, repository, weeks, *by_metric[metric], filters)
            for metric in Metric
        }
        explain.fill(repository, figures)
        dora.append(
            {"repository": repository}
            | {metric.value: figure.as_dict(metric) for metric, figure in figures.items()}
        )
    return {
        "filters": filters.as_dict(),
        "repositories": sorted(events),
        "weeks": [week.isoformat() for week in weeks],
        "dora": dora,
        "flow": _flow(results["flow"], explain),
        "ci": _ci(results["ci"], explain),
    }


def _figure(
    metric: Metric,
    repository: str,
    weeks: Sequence[date],
    totals: Mapping[str, dict[str, Any]],
    weekly: Mapping[tuple[str, date], dict[str, Any]],
    filters: ReportFilters,
) -> KeyFigure:
    total = totals.get(repository)
    key = KEYS[metric]
    count = int(total[key.count]) if total else 0
    if metric is Metric.DEPLOYMENT_FREQUENCY:
        # A count, not an aggregate: a week without deployments is 0, the value per day.
        return KeyFigure(
            value=count / filters.days,
            count=count,
            trend=[float(weekly[(repository, w)][key.value]) if (repository, w) in weekly
                   else 0.0 for w in weeks],
        )  # fmt: skip
    figure = KeyFigure(
        value=_number(total[key.value]) if total else None,
        count=count,
        trend=[_number(weekly[(repository, w)][key.value]) if (repository, w) in weekly
               else None for w in weeks],
    )  # fmt: skip
    if metric is Metric.CHANGE_FAILURE_RATE:
        figure.extra["failed_deployments"] = int(total["failed_deployments"]) if total else 0
    return figure


@dataclass(frozen=True)
class _Explain:
    """Says, in the page's words, why a figure is missing and how to get it."""

    events: Mapping[str, set[str]]
    seen: Mapping[tuple[str, str], int]
    patterns: Patterns
    filters: ReportFilters

    def deployments(self, repository: str) -> str | None:
        if "deployment_status" not in self.events.get(repository, set()):
            return (
                "No deployment_status deliveries from this repository yet: subscribe the "
                "GitHub App to Deployment statuses, and deploy through GitHub deployments "
                "(an Actions job with an environment creates them)."
            )
        if not self.seen.get((repository, "deployments")):
            return (
                "Deployment statuses arrive, but none is a success in an environment "
                f"matching HOOKSTREAM_PRODUCTION_PATTERN ({self.patterns.production})."
            )
        return None

    def incidents(self, repository: str) -> str | None:
        if "issues" not in self.events.get(repository, set()):
            return (
                "No issues deliveries from this repository yet: subscribe the GitHub App to "
                "Issues and label incidents to match HOOKSTREAM_INCIDENT_PATTERN "
                f"({self.patterns.incident})."
            )
        if not self.seen.get((repository, "incidents")):
            return (
                "No incident yet: an incident is an issue with a label matching "
                f"HOOKSTREAM_INCIDENT_PATTERN ({self.patterns.incident})."
            )
        return None

    def fill(self, repository: str, figures: Mapping[Metric, KeyFigure]) -> None:
        no_deployments = self.deployments(repository)
        no_incidents = self.incidents(repository)
        window = f"from {self.filters.start} to {self.filters.end}"
        frequency = figures[Metric.DEPLOYMENT_FREQUENCY]
        if no_deployments:
            frequency.value, frequency.missing = None, no_deployments
        lead = figures[Metric.LEAD_TIME]
        if lead.value is None:
            lead.missing = no_deployments or (
                "No merged pull request was deployed " + window + ": lead time needs "
                "pull_request (and push) deliveries and a production deployment after the merge."
            )
        failure = figures[Metric.CHANGE_FAILURE_RATE]
        if failure.value is None:
            failure.missing = no_deployments or f"No production deployment {window}."
        elif no_incidents:
            failure.note = no_incidents
        restore = figures[Metric.TIME_TO_RESTORE]
        if restore.value is None:
            restore.missing = no_incidents or f"No incident opened {window} has been closed."


def _flow(result: QueryResult, explain: _Explain) -> dict[str, Any]:
    [row] = _rows(result) or [{}]
    stages = ("coding_seconds", "pickup_seconds", "review_seconds", "deploy_seconds")
    opened = int(row.get("pull_requests") or 0)
    flow: dict[str, Any] = {"pull_requests": opened}
    flow |= {stage: _number(row.get(stage)) if opened else None for stage in stages}
    flow["slowest_open"] = [
        {"repository": repo, "pr_number": number, "title": title, "author_login": author,
         "opened_at": _iso(opened_at)}
        for opened_at, repo, number, title, author in row.get("oldest_open") or []
    ]  # fmt: skip
    flow["missing"] = None
    if not opened:
        has_prs = any("pull_request" in events for events in explain.events.values())
        flow["missing"] = (
            f"No pull request opened from {explain.filters.start} to {explain.filters.end}."
            if has_prs
            else "No pull_request deliveries yet: subscribe the GitHub App to Pull requests, "
            "Pull request reviews and Pushes."
        )
    return flow


def _ci(result: QueryResult, explain: _Explain) -> dict[str, Any]:
    workflows = [
        {key: _number(value) if key.endswith(("_rate", "_seconds")) else value
         for key, value in row.items()}
        for row in _rows(result)
    ]  # fmt: skip
    missing = None
    if not workflows:
        has_runs = any("workflow_run" in events for events in explain.events.values())
        missing = (
            f"No completed workflow run started from {explain.filters.start} "
            f"to {explain.filters.end}."
            if has_runs
            else "No workflow_run deliveries yet: subscribe the GitHub App to Workflow runs."
        )
    return {"workflows": workflows, "missing": missing}


def _iso(value: datetime | str) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)

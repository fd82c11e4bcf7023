"""The Grafana dashboard ``deploy/grafana/hookstream-insights.json`` against the real engine.

Grafana never runs here. Each panel query is expanded the way Grafana and the ClickHouse
data source plugin (``grafana-clickhouse-datasource`` 4.x) would expand it — the plugin's
``$__conditionalAll`` first, then the ``repository`` variable, then the backend macros
``$__timeFilter``, ``$__dateFilter``, ``$__fromTime`` and ``$__toTime`` — and run read-only
on the embedded engine loaded with the scripted scenario of ``insights_scenario.py``. The
expander refuses anything it does not know, so a typo in the JSON fails here instead of
showing an empty panel in Grafana.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from deploy.corpus import Example
from processors.insights.rows import InsightRows, insight_rows
from projections.dora_bands import THRESHOLDS, Metric
from projections.query import QueryResult, run_readonly
from projections.sink import ClickHouseSink
from projections.views import CHANGE_FAILURE_AGGREGATES, CI_AGGREGATES
from schemas.envelope import Envelope, RecordHeader
from schemas.settings import Settings
from tests.helpers import REPO_ROOT
from tests.integration.insights_scenario import CAROL, DAY2, WEB, Scenario, at

pytestmark = pytest.mark.integration

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "hookstream-insights.json"
PLUGIN = "grafana-clickhouse-datasource"
DATASOURCES = ({"type": PLUGIN, "uid": "${DS_CLICKHOUSE}"}, "${DS_CLICKHOUSE}")
VARIABLE_SQL = (
    "SELECT DISTINCT repository FROM deliveries WHERE repository != '' ORDER BY repository"
)
MEDIAN = "quantileExactInclusive(0.5)"

# The test's time range, as Grafana sends an absolute range of whole days.
START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)
REPOSITORIES = ("acme/api", "acme/web")
# The scenario leaves no pull request open; this one (acme/web #8) is, so the open-PR
# panel is checked on a row rather than on an empty answer.
OPEN_PR_OPENED = at(DAY2, "09:00")

# Every panel's columns, in order. A panel missing here, or here but not in the JSON, fails.
# A stat panel has one name and one number per row: Grafana titles each value with the row's
# strings, and adds the field name when the row has other numbers.
COLUMNS: dict[str, list[str]] = {
    "Deployment frequency": ["repository", "deployments_per_day"],
    "Lead time for changes (median)": ["repository", "median_lead_time_seconds"],
    "Change failure rate": ["repository", "change_failure_rate"],
    "Time to restore service (median)": ["repository", "median_restore_seconds"],
    "Deployments per week": ["week", "repository", "deployments"],
    "Lead time for changes per week (median)": ["week", "repository", "median_lead_time_seconds"],
    "Change failure rate per week": ["week", "repository", "change_failure_rate"],
    "Time to restore service per week (median)": ["week", "repository", "median_restore_seconds"],
    "Pull-request flow (median per stage)": [
        "repository", "pull_requests", "median_coding_seconds", "median_pickup_seconds",
        "median_review_seconds", "median_deploy_seconds",
    ],
    "Slowest open pull requests": [
        "repository", "pr_number", "title", "author_login", "opened_at", "open_seconds",
        "pickup_seconds",
    ],
    "CI health per workflow": [
        "repository", "workflow", "runs", "successes", "success_rate", "p50_seconds",
        "p90_seconds",
    ],
}  # fmt: skip
# Stat panels coloured by DORA band: the page's thresholds (projections/dora_bands.py).
BANDS = {
    "Deployment frequency": Metric.DEPLOYMENT_FREQUENCY,
    "Lead time for changes (median)": Metric.LEAD_TIME,
    "Change failure rate": Metric.CHANGE_FAILURE_RATE,
    "Time to restore service (median)": Metric.TIME_TO_RESTORE,
}
# Panels whose rows are not limited to the time range's start.
UNBOUNDED = {"Slowest open pull requests"}


# --- the expander ------------------------------------------------------------------------
class ExpansionError(Exception):
    """The query uses a macro, variable or format this expander (and the test) does not know."""


@dataclass(frozen=True)
class Selection:
    """The dashboard state a query is expanded for: the time range and the repositories."""

    start: datetime
    end: datetime
    repositories: tuple[str, ...] | None  # None: "All"
    options: tuple[str, ...] = REPOSITORIES


MACRO = re.compile(r"\$__(\w+)")
VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")
CONDITIONAL_ALL = "$__conditionalAll("


def macro_args(sql: str, open_at: int) -> tuple[list[str], int]:
    """The bracketed, comma-separated arguments at ``sql[open_at]``, and the index past them."""
    depth, args, start = 0, [], open_at + 1
    for i in range(open_at, len(sql)):
        if sql[i] == "(":
            depth += 1
        elif sql[i] == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:i])
                return args, i + 1
        elif sql[i] == "," and depth == 1:
            args.append(sql[start:i])
            start = i + 1
    raise ExpansionError(f"unclosed macro arguments: {sql[open_at:]!r}")


def conditional_all(sql: str, selection: Selection) -> str:
    # The plugin's frontend, before variables: All drops the condition, else it stays.
    while (index := sql.rfind(CONDITIONAL_ALL)) != -1:
        args, end = macro_args(sql, index + len(CONDITIONAL_ALL) - 1)
        if len(args) != 2:
            raise ExpansionError(f"$__conditionalAll takes 2 arguments, got {len(args)}")
        name = re.fullmatch(r"\$\{(\w+)\}|\$(\w+)", args[1].strip())
        if name is None or (name.group(1) or name.group(2)) != "repository":
            raise ExpansionError(f"$__conditionalAll on an unknown variable: {args[1]!r}")
        phrase = "1=1" if selection.repositories is None else args[0]
        sql = sql[:index] + phrase + sql[end:]
    return sql


def singlequote(values: tuple[str, ...]) -> str:
    # Grafana's singlequote format: each value quoted, ' escaped as \', joined by commas.
    return ",".join("'" + value.replace("'", "\\'") + "'" for value in values)


def variables(sql: str, selection: Selection) -> str:
    def replace(match: re.Match[str]) -> str:
        name, fmt = match.group(1) or match.group(3), match.group(2)
        if match.group(3) is not None and name.startswith("__"):
            return match.group(0)  # a plugin macro, expanded by the backend next
        if name != "repository":
            raise ExpansionError(f"unknown variable {match.group(0)!r}")
        if fmt != "singlequote":
            raise ExpansionError(f"{match.group(0)!r}: write ${{repository:singlequote}}")
        values = selection.options if selection.repositories is None else selection.repositories
        return singlequote(values)

    return VARIABLE.sub(replace, sql)


def backend_macros(sql: str, selection: Selection) -> str:
    # The plugin's pkg/macros: seconds since the epoch for times, UTC dates for dates.
    start, end = int(selection.start.timestamp()), int(selection.end.timestamp())
    day0, day1 = selection.start.strftime("%Y-%m-%d"), selection.end.strftime("%Y-%m-%d")
    expansions: dict[str, tuple[int, Callable[[list[str]], str]]] = {
        "fromTime": (0, lambda _: f"toDateTime({start})"),
        "toTime": (0, lambda _: f"toDateTime({end})"),
        "timeFilter": (
            1, lambda a: f"{a[0]} >= toDateTime({start}) AND {a[0]} <= toDateTime({end})",
        ),
        "dateFilter": (1, lambda a: f"{a[0]} >= toDate('{day0}') AND {a[0]} <= toDate('{day1}')"),
    }  # fmt: skip
    out, position = [], 0
    for match in MACRO.finditer(sql):
        if match.start() < position:
            continue
        name = match.group(1)
        if name not in expansions:
            raise ExpansionError(f"unknown macro $__{name}")
        arity, expand_macro = expansions[name]
        args: list[str] = []
        end_at = match.end()
        if sql.startswith("(", end_at):
            args, end_at = macro_args(sql, end_at)
            args = [a.strip() for a in args]
        if len(args) != arity:
            raise ExpansionError(f"$__{name} takes {arity} argument(s), got {len(args)}")
        out += [sql[position : match.start()], expand_macro(args)]
        position = end_at
    out.append(sql[position:])
    return "".join(out)


def expand(sql: str, selection: Selection) -> str:
    expanded = backend_macros(variables(conditional_all(sql, selection), selection), selection)
    if "$" in expanded:
        raise ExpansionError(f"left unexpanded: {expanded!r}")
    return expanded


# --- the dashboard -----------------------------------------------------------------------
def load_dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def panel_sql(title: str) -> str:
    [panel] = [p for p in query_panels(load_dashboard()) if p["title"] == title]
    [target] = panel["targets"]
    sql: str = target["rawSql"]
    return sql


ALL = Selection(START, END, None)


# --- the engine --------------------------------------------------------------------------
def envelope(event: str, body: bytes, delivery: str) -> Envelope:
    return Envelope.from_record(
        [(RecordHeader.EVENT, event.encode()), (RecordHeader.DELIVERY, delivery.encode()),
         (RecordHeader.HOOK_ID, b"7"), (RecordHeader.CONTENT_TYPE, b"application/json"),
         (RecordHeader.RECEIVED_AT, b"2026-03-04T00:00:00+00:00")],
        body,
    )  # fmt: skip


@pytest.fixture(scope="module")
async def engine(
    examples: tuple[Example, ...], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ClickHouseSink]:
    defaults = Settings.model_fields
    sink = ClickHouseSink(
        f"chdb://{tmp_path_factory.mktemp('grafana') / 'ch'}",
        defaults["production_pattern"].default,
        defaults["incident_pattern"].default,
    )
    await sink.start()
    scenario = Scenario(examples)
    scenario.pull_request(WEB, "opened", 8, CAROL, "feat-y", OPEN_PR_OPENED, OPEN_PR_OPENED)
    rows = InsightRows()
    for i, (event, body) in enumerate(scenario.deliveries):
        rows.extend(insight_rows(envelope(event, body, f"grafana-{i}")))
    await sink.write(rows.tables, "grafana-scenario")
    yield sink
    sink.close()


async def rows_of(engine: ClickHouseSink, title: str, selection: Selection = ALL) -> list[Any]:
    """The panel's rows, once its columns (names and order) are checked."""
    sql = expand(panel_sql(title), selection)
    # chdb answers an empty result with no column names; DESCRIBE names them regardless.
    described = await engine.run(lambda client: run_readonly(client, f"DESCRIBE ({sql})"))
    assert [row[0] for row in described.rows] == COLUMNS[title], title
    result: QueryResult = await engine.run(lambda client: run_readonly(client, sql))
    if result.rows:
        assert result.columns == COLUMNS[title], title
    return [tuple(row) for row in result.rows]


# --- the tests ---------------------------------------------------------------------------
def test_the_file_is_an_importable_dashboard() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "hookstream-insights"
    assert dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["id"] is None
    [source] = dashboard["__inputs"]
    assert (source["name"], source["type"], source["pluginId"]) == (
        "DS_CLICKHOUSE", "datasource", PLUGIN,
    )  # fmt: skip
    requires = {(r["type"], r["id"]) for r in dashboard["__requires"]}
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    assert ("datasource", PLUGIN) in requires
    assert ("grafana", "grafana") in requires
    for panel in query_panels(dashboard):
        assert ("panel", panel["type"]) in requires, panel["type"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["datasource"] in DATASOURCES
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] in DATASOURCES, panel["title"]
            assert target["rawSql"].strip(), panel["title"]
            assert target["editorType"] == "sql"
            assert target["refId"]
    titles = [panel["title"] for panel in query_panels(dashboard)]
    assert sorted(titles) == sorted(COLUMNS)
    [variable] = dashboard["templating"]["list"]
    assert variable["name"] == "repository"
    assert variable["type"] == "query"
    assert variable["datasource"] in DATASOURCES
    assert variable["query"] == VARIABLE_SQL
    assert variable["multi"] is True
    assert variable["includeAll"] is True
    assert not variable.get("allValue")  # All must mean every option (see conditional_all)


def test_aggregates_come_from_the_views_module() -> None:
    for title in ("Change failure rate", "Change failure rate per week"):
        assert CHANGE_FAILURE_AGGREGATES in panel_sql(title)
    assert CI_AGGREGATES in panel_sql("CI health per workflow")
    for title in COLUMNS:
        # Outside the shared CI aggregates, every quantile is the ordinary median.
        sql = panel_sql(title).replace(CI_AGGREGATES, "")
        for quantile in re.findall(r"\b(?:quantile\w*|median\w*)\(.*?\)", sql):
            assert quantile == MEDIAN, (title, quantile)


def test_stat_colours_are_the_dora_bands() -> None:
    panels = {p["title"]: p for p in query_panels(load_dashboard())}
    for title, metric in BANDS.items():
        steps = panels[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps[0]["value"] is None
        edges = tuple(step["value"] for step in steps[1:])
        expected = THRESHOLDS[metric].edges
        if THRESHOLDS[metric].higher_is_better:
            expected = expected[::-1]
        assert edges == pytest.approx(expected), title
        colours = [step["color"] for step in steps]
        assert colours[-1 if THRESHOLDS[metric].higher_is_better else 0] == "green", title


async def test_the_variable_lists_the_repositories(engine: ClickHouseSink) -> None:
    result = await engine.run(lambda client: run_readonly(client, VARIABLE_SQL))
    assert result.rows == [[name] for name in REPOSITORIES]


@pytest.mark.parametrize("title", sorted(COLUMNS))
async def test_every_panel_runs_for_all_some_and_one_repository(
    engine: ClickHouseSink, title: str
) -> None:
    every = await rows_of(engine, title, ALL)
    assert every, f"{title}: no rows from the scenario"
    assert await rows_of(engine, title, Selection(START, END, REPOSITORIES)) == every
    web = await rows_of(engine, title, Selection(START, END, ("acme/web",)))
    column = COLUMNS[title].index("repository")
    assert web == [row for row in every if row[column] == "acme/web"]


@pytest.mark.parametrize("title", sorted(COLUMNS))
async def test_a_range_after_the_history_is_empty(engine: ClickHouseSink, title: str) -> None:
    april = Selection(datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 4, 30, tzinfo=UTC), None)
    rows = await rows_of(engine, title, april)
    assert bool(rows) == (title in UNBOUNDED), rows


async def test_the_dora_keys_match_the_scenario(engine: ClickHouseSink) -> None:
    days = 31
    assert await rows_of(engine, "Deployment frequency") == [
        ("acme/api", pytest.approx(2 / days)), ("acme/web", pytest.approx(1 / days)),
    ]  # fmt: skip
    # acme/api: 19800 s and 14400 s, the median is their mean; acme/web: 3600 s.
    assert await rows_of(engine, "Lead time for changes (median)") == [
        ("acme/api", 17100.0), ("acme/web", 3600.0),
    ]  # fmt: skip
    # acme/api: 1 failed of 2 deployments; acme/web: none of 1.
    assert await rows_of(engine, "Change failure rate") == [("acme/api", 0.5), ("acme/web", 0.0)]
    assert await rows_of(engine, "Time to restore service (median)") == [
        ("acme/api", 12600.0),
    ]


async def test_the_weekly_trends_match_the_scenario(engine: ClickHouseSink) -> None:
    # The whole history falls in the week of Monday 2 March 2026.
    week = datetime(2026, 3, 2)
    assert await rows_of(engine, "Deployments per week") == [
        (week, "acme/api", 2), (week, "acme/web", 1),
    ]  # fmt: skip
    assert await rows_of(engine, "Lead time for changes per week (median)") == [
        (week, "acme/api", 17100.0), (week, "acme/web", 3600.0),
    ]  # fmt: skip
    assert await rows_of(engine, "Change failure rate per week") == [
        (week, "acme/api", 0.5), (week, "acme/web", 0.0),
    ]  # fmt: skip
    assert await rows_of(engine, "Time to restore service per week (median)") == [
        (week, "acme/api", 12600.0),
    ]


async def test_flow_open_prs_and_ci_match_the_scenario(engine: ClickHouseSink) -> None:
    h = 3600
    # acme/api: coding 2 h and 1 h, pickup 1 h twice, review 1 h and 1.5 h, deploy 1.5 h
    # and 0.5 h. acme/web: #7 has only a deploy stage (0.5 h); the open #8 has none.
    assert await rows_of(engine, "Pull-request flow (median per stage)") == [
        ("acme/api", 2, 1.5 * h, 1.0 * h, 1.25 * h, 1.0 * h),
        ("acme/web", 2, None, None, None, 0.5 * h),
    ]
    [open_pr] = await rows_of(engine, "Slowest open pull requests")
    repository, number, _title, author, opened, open_seconds, pickup = open_pr
    assert (repository, number, author, pickup) == ("acme/web", 8, "carol", None)
    assert opened.replace(tzinfo=UTC) == OPEN_PR_OPENED
    assert open_seconds == (END - OPEN_PR_OPENED).total_seconds()
    # The latest attempt of each run: CI 360 s and 240 s succeed, 120 s fails.
    assert await rows_of(engine, "CI health per workflow") == [
        ("acme/web", "CI", 3, 2, pytest.approx(2 / 3), 240, 360),
        ("acme/web", "Deploy", 1, 1, 1.0, 600, 600),
    ]


def test_expansion_matches_the_plugin() -> None:
    sql = (
        "SELECT 1 FROM t WHERE $__timeFilter(started_at) AND $__dateFilter( day ) "
        "AND x BETWEEN $__fromTime AND $__toTime "
        "AND $__conditionalAll(repository IN (${repository:singlequote}), $repository)"
    )
    assert expand(sql, Selection(START, END, ("acme/api", "o'brien/x"))) == (
        "SELECT 1 FROM t WHERE started_at >= toDateTime(1772323200) "
        "AND started_at <= toDateTime(1775001599) "
        "AND day >= toDate('2026-03-01') AND day <= toDate('2026-03-31') "
        "AND x BETWEEN toDateTime(1772323200) AND toDateTime(1775001599) "
        "AND repository IN ('acme/api','o\\'brien/x')"
    )
    assert expand(sql, ALL).endswith("toDateTime(1775001599) AND 1=1")
    every = "SELECT 1 WHERE r IN (${repository:singlequote})"
    assert expand(every, ALL) == "SELECT 1 WHERE r IN ('acme/api','acme/web')"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 WHERE $__timeFiltr(t)",  # a misspelt macro
        "SELECT 1 WHERE $__timeFilter_ms(t)",  # a macro the dashboard does not use
        "SELECT 1 WHERE $__timeFilter(a, b)",  # the wrong number of arguments
        "SELECT 1 WHERE $__timeFilter(t",  # an unclosed bracket
        "SELECT 1 WHERE $__timeFilter",  # no argument at all
        "SELECT 1 WHERE t > $__from",  # a Grafana global the plugin would not see
        "SELECT 1 WHERE r IN (${repo:singlequote})",  # an unknown variable
        "SELECT 1 WHERE r IN ($repository)",  # no format: invalid SQL for several values
        "SELECT 1 WHERE r IN (${repository:csv})",  # a format other than singlequote
        "SELECT 1 WHERE $__conditionalAll(r IN (${repository:singlequote}))",
        "SELECT 1 WHERE $__conditionalAll(r IN (${repository:singlequote}), $repo)",
        "SELECT 1 WHERE $ repository",  # a stray $
    ],
)
def test_the_expander_refuses_what_it_does_not_know(sql: str) -> None:
    with pytest.raises(ExpansionError):
        expand(sql, ALL)

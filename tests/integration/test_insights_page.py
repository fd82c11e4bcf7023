"""The insights page and its JSON API, end to end, read by a real browser.

A scripted history (tests/integration/insights_scenario.py, plus two open pull requests,
one from a repository that never deploys) goes through the ingress and the real broker
into an insights worker (``hookstream worker insights``, its own process and chdb path).
Debian's Chromium, driven by Playwright, opens the page that worker serves; every
number the tests expect is fixed by the construction of the history.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from deploy.corpus import Example
from deploy.send import signed_delivery
from projections.query import QueryServiceUnavailable, query_service
from schemas.settings import Settings
from tests.helpers import (
    SECRET,
    WorkerProcess,
    eventually,
    free_port_pair,
    make_settings,
    processor_env,
    start_ingress,
    stop_ingress,
)
from tests.integration.insights_scenario import CAROL, DAY2, WEB, Scenario, at

pytestmark = pytest.mark.integration

DOCS = {"id": 1003, "name": "docs", "full_name": "acme/docs"}
MARCH = "from=2026-03-01&to=2026-03-31"
H = 3600.0
# acme/api: PRs 1 and 2 deployed by D2 after 5.5 h and 4 h; D2 and D4, one failed; incident
# 50 restored in 3.5 h. acme/web: PR 7 deployed in 1 h by its one deployment; no issues.
KEYS = {
    ("acme/api", "deployment_frequency"): (2 / 31, "high"),
    ("acme/api", "lead_time"): (4.75 * H, "high"),
    ("acme/api", "change_failure_rate"): (0.5, "low"),
    ("acme/api", "time_to_restore"): (3.5 * H, "high"),
    ("acme/web", "deployment_frequency"): (1 / 31, "medium"),
    ("acme/web", "lead_time"): (1 * H, "high"),
    ("acme/web", "change_failure_rate"): (0.0, "elite"),
}
STAGES = {"coding": 1.5 * H, "pickup": 1 * H, "review": 1.25 * H, "deploy": 0.5 * H}


@dataclass
class Site:
    url: str
    port: int
    settings: Settings

    async def get(self, path: str) -> tuple[int, Any, dict[str, str]]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}{path}") as response,
        ):
            body: Any = (
                await response.json()
                if response.content_type == "application/json"
                else await response.text()
            )
            return response.status, body, dict(response.headers)


def history(examples: tuple[Example, ...]) -> list[tuple[str, bytes]]:
    scenario = Scenario(examples)
    scenario.pull_request(WEB, "opened", 8, CAROL, "feat-y", at(DAY2, "16:00"), at(DAY2, "16:00"))
    scenario.pull_request(DOCS, "opened", 3, CAROL, "typo", at(DAY2, "09:00"), at(DAY2, "09:00"))
    return scenario.deliveries


async def _serve(
    kafka_bootstrap: str, tmp: Path, deliveries: list[tuple[str, bytes]]
) -> AsyncIterator[Site]:
    settings = make_settings(kafka_bootstrap, tmp)
    server, ingress = await start_ingress(settings)
    port = free_port_pair()
    worker = WorkerProcess(
        "insights",
        processor_env(settings, HOOKSTREAM_QUERY_PORT=str(port), HOOKSTREAM_SINK_FLUSH_S="0.2"),
        tmp / "worker.log",
    )
    await worker.start()
    try:
        await ingress.wait_ready()
        for event, body in deliveries:
            assert (await ingress.post(signed_delivery(body, event, SECRET)))[0] == 202

        async def projected() -> bool:
            try:
                rows = (await query_service(port, "SELECT count() FROM deliveries")).rows
            except QueryServiceUnavailable:
                return False
            return bool(rows[0][0] == len(deliveries))

        await eventually(projected, f"{len(deliveries)} deliveries projected", 120)
        yield Site(f"http://127.0.0.1:{port}", port, settings)
    finally:
        await worker.stop()
        await stop_ingress(server, ingress)


@pytest.fixture(scope="module")
async def site(
    kafka_bootstrap: str, examples: tuple[Example, ...], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Site]:
    async for running in _serve(
        kafka_bootstrap, tmp_path_factory.mktemp("page"), history(examples)
    ):
        yield running


@pytest.fixture(scope="module")
async def empty_site(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Site]:
    async for running in _serve(kafka_bootstrap, tmp_path_factory.mktemp("empty"), []):
        yield running


def chromium_path() -> str:
    path = os.environ.get("HOOKSTREAM_TEST_CHROMIUM") or shutil.which("chromium")
    if path is None:
        pytest.skip(
            "no Chromium: `make test` installs Debian's chromium package where apt-get is "
            "allowed; or set HOOKSTREAM_TEST_CHROMIUM to a Chromium binary"
        )
    return path


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_path()
    # The flags keep a headless Chromium off the (closed) network; root needs no sandbox.
    args = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
            "--disable-background-networking", "--disable-component-update"]  # fmt: skip
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=args)
        yield launched
        await launched.close()


@dataclass
class Opened:
    page: Page
    errors: list[str]


async def open_page(browser: Browser, url: str, state: str = "ready") -> Opened:
    page = await browser.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(url)
    await page.wait_for_selector(f"body[data-state={state}]")
    return Opened(page, errors)


async def tiles(page: Page) -> dict[tuple[str, str], dict[str, Any]]:
    found: list[dict[str, Any]] = await page.eval_on_selector_all(
        ".tile[data-metric]",
        """nodes => nodes.map(n => {
            const svg = n.querySelector('svg.trend');
            return {
                repository: n.dataset.repository, metric: n.dataset.metric,
                value: n.dataset.value, band: n.dataset.band,
                shown: n.querySelector('.value').textContent,
                label: n.querySelector('.band')?.textContent ?? null,
                missing: n.querySelector('.missing')?.textContent ?? null,
                weeks: svg ? Number(svg.dataset.weeks) : null,
                drawn: svg ? Number(svg.dataset.drawn) : null,
                bars: svg ? [...svg.querySelectorAll('rect.bar')].map(r => ({
                    week: r.dataset.week, value: Number(r.dataset.value),
                    height: r.getBBox().height})) : [],
            };
        })""",
    )
    return {(t["repository"], t["metric"]): t for t in found}


# --- the JSON API against the views -----------------------------------------------------------
async def test_the_api_reads_the_views_for_the_window(site: Site) -> None:
    status, report, _ = await site.get(f"/insights/api/dora?{MARCH}")
    assert status == 200
    assert report["filters"] == {"repository": None, "from": "2026-03-01", "to": "2026-03-31",
                                 "days": 31}  # fmt: skip
    assert report["repositories"] == ["acme/api", "acme/docs", "acme/web"]
    assert report["weeks"][0] == "2026-02-23"
    assert len(report["weeks"]) == 6
    by_repo = {row["repository"]: row for row in report["dora"]}
    for (repository, metric), (value, band) in KEYS.items():
        figure = by_repo[repository][metric]
        assert figure["value"] == pytest.approx(value), (repository, metric)
        assert figure["band"] == band, (repository, metric)

    # The window holds the whole history, so it must agree with the all-time views.
    async def sql(query: str) -> list[list[Any]]:
        return (await query_service(site.port, query)).rows

    for repository, deployments, failed, rate in await sql(
        "SELECT repository, deployments, failed_deployments, change_failure_rate "
        "FROM dora_change_failure_rate"
    ):
        figure = by_repo[repository]["change_failure_rate"]
        assert (figure["count"], figure["failed_deployments"], figure["value"]) == (
            deployments, failed, pytest.approx(rate))  # fmt: skip
    ci = await sql("SELECT repository, workflow, runs, successes, success_rate, p50_seconds, "
                   "p90_seconds FROM ci_health ORDER BY repository, workflow")  # fmt: skip
    assert [list(w.values()) for w in report["ci"]["workflows"]] == ci
    [[median_lead]] = await sql("SELECT quantileExactInclusive(0.5)(lead_time_seconds) "
                                "FROM dora_lead_time WHERE repository = 'acme/api'")  # fmt: skip
    assert by_repo["acme/api"]["lead_time"]["value"] == median_lead == 4.75 * H
    # Weekly trends: everything happened in the week of Monday 2 March.
    assert by_repo["acme/api"]["deployment_frequency"]["trend"] == [0, 2, 0, 0, 0, 0]
    assert by_repo["acme/api"]["lead_time"]["trend"] == [None, 4.75 * H, None, None, None, None]
    flow = report["flow"]
    assert flow["pull_requests"] == 5
    assert {stage: flow[f"{stage}_seconds"] for stage in STAGES} == STAGES
    assert [(pr["repository"], pr["pr_number"]) for pr in flow["slowest_open"]] == [
        ("acme/docs", 3), ("acme/web", 8)]  # fmt: skip


async def test_partial_data_says_what_is_missing(site: Site) -> None:
    _, report, _ = await site.get(f"/insights/api/dora?{MARCH}")
    by_repo = {row["repository"]: row for row in report["dora"]}
    docs = by_repo["acme/docs"]
    for metric in ("deployment_frequency", "lead_time", "change_failure_rate"):
        assert docs[metric]["value"] is None
        assert docs[metric]["band"] is None
        assert "subscribe the GitHub App to Deployment statuses" in docs[metric]["missing"]
    assert "subscribe the GitHub App to Issues" in docs["time_to_restore"]["missing"]
    web = by_repo["acme/web"]
    assert web["time_to_restore"]["value"] is None
    assert "HOOKSTREAM_INCIDENT_PATTERN" in web["change_failure_rate"]["note"]
    # A window with no activity: zero deployments is a number; medians are missing.
    _, quiet, _ = await site.get(
        "/insights/api/dora?repository=acme/api&from=2026-04-01&to=2026-04-30"
    )
    api = quiet["dora"][0]
    assert (api["deployment_frequency"]["value"], api["deployment_frequency"]["band"]) == (0, "low")
    assert api["lead_time"]["value"] is None
    assert "No merged pull request was deployed from 2026-04-01" in api["lead_time"]["missing"]
    assert (
        api["change_failure_rate"]["missing"]
        == "No production deployment from 2026-04-01 to 2026-04-30."
    )
    assert quiet["flow"]["missing"] == "No pull request opened from 2026-04-01 to 2026-04-30."
    assert quiet["ci"]["missing"].startswith("No workflow_run deliveries yet: subscribe")
    _, web_april, _ = await site.get(
        "/insights/api/dora?repository=acme/web&from=2026-04-01&to=2026-04-30"
    )
    assert web_april["ci"] == {
        "workflows": [],
        "missing": "No completed workflow run started from 2026-04-01 to 2026-04-30.",
    }


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("repository=acme", "repository must be owner/name"),
        ("from=2026-13-01", "from must be an ISO date"),
        ("from=2026-03-02&to=2026-03-01", "from (2026-03-02) is after to (2026-03-01)"),
        ("repo=acme/api", "unknown parameter 'repo'"),
        ("from=2000-01-01&to=2026-01-01", "longer than 3660 days"),
    ],
)
async def test_bad_filters_are_refused_with_the_reason(
    site: Site, query: str, message: str
) -> None:
    status, body, _ = await site.get(f"/insights/api/dora?{query}")
    assert status == 400
    assert message in body["error"]


async def test_the_page_serves_only_its_own_assets(site: Site) -> None:
    status, html, headers = await site.get("/insights")
    assert status == 200
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    references = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert references
    assert all(ref.startswith(("/insights", "data:")) for ref in references), references
    for ref in references:
        if ref.startswith("/insights/static/"):
            assert (await site.get(ref))[0] == 200
    assert (await site.get("/insights/static/missing.js"))[0] == 404
    assert (await site.get("/insights/static/insights.html"))[0] == 404


# --- in the browser ---------------------------------------------------------------------------
async def test_the_page_shows_the_keys_bands_and_trends(site: Site, browser: Browser) -> None:
    opened = await open_page(browser, f"{site.url}/insights?{MARCH}")
    shown = await tiles(opened.page)
    for key, (value, band) in KEYS.items():
        assert float(shown[key]["value"]) == pytest.approx(value), key
        assert shown[key]["band"] == band
        assert shown[key]["label"] == band
        # Each chart has drawn: a bar per week, the week of 2 March with a value.
        assert shown[key]["weeks"] == 6
        [bar] = [b for b in shown[key]["bars"] if b["week"] == "2026-03-02"]
        assert bar["value"] == pytest.approx(value * (31 if "frequency" in key[1] else 1))
    assert shown[("acme/api", "lead_time")]["shown"] == "4 h 45 min"
    assert shown[("acme/api", "change_failure_rate")]["shown"] == "50 %"
    heights = {b["week"]: b["height"] for b in shown[("acme/api", "deployment_frequency")]["bars"]}
    assert heights.pop("2026-03-02") > 40  # the tallest bar fills the chart
    assert set(heights.values()) == {2}  # a week with no deployment: a 2 px mark
    docs = shown[("acme/docs", "deployment_frequency")]
    assert (docs["value"], docs["band"], docs["shown"]) == ("", "", "—")
    assert "Deployment statuses" in docs["missing"]
    assert docs["weeks"] is None  # no chart for a key without data, a sentence instead
    restore = shown[("acme/web", "time_to_restore")]
    assert restore["value"] == ""
    assert "Issues" in restore["missing"]
    page = opened.page
    stages = await page.eval_on_selector_all(
        "[data-stage]", "nodes => nodes.map(n => [n.dataset.stage, Number(n.dataset.value)])"
    )
    assert dict(stages) == STAGES
    assert await page.eval_on_selector_all(
        "#slowest tbody tr", "rows => rows.map(r => r.dataset.repository + '#' + r.dataset.pr)"
    ) == ["acme/docs#3", "acme/web#8"]
    ci = await page.eval_on_selector_all(
        "#ci tbody tr",
        "rows => rows.map(r => [r.dataset.workflow, ...[...r.querySelectorAll('[data-value]')]"
        ".map(c => Number(c.dataset.value))])",
    )
    assert ci == [["CI", 3, pytest.approx(2 / 3), 240, 360], ["Deploy", 1, 1, 600, 600]]
    assert (
        await page.text_content("#status") == "3 repositories, 2026-03-01 to 2026-03-31 (31 days)."
    )
    assert opened.errors == []
    await page.close()


async def test_filters_change_the_numbers_and_the_url(site: Site, browser: Browser) -> None:
    opened = await open_page(browser, f"{site.url}/insights?{MARCH}")
    page = opened.page
    await page.select_option("#repository", "acme/web")
    await page.wait_for_url(re.compile(r"repository=acme%2Fweb"))
    # Locator assertions, not wait_for_function: the page's CSP forbids eval, as it should.
    await expect(page.locator(".tile[data-metric]")).to_have_count(4)
    assert {key[0] for key in await tiles(page)} == {"acme/web"}
    await page.fill("#from", "2026-03-03")
    await page.dispatch_event("#from", "change")
    await page.wait_for_url(re.compile(r"from=2026-03-03"))
    frequency_tile = page.locator(".tile[data-metric=deployment_frequency]")
    await expect(frequency_tile).to_have_attribute("data-value", "0")
    frequency = (await tiles(page))[("acme/web", "deployment_frequency")]
    assert (frequency["band"], frequency["weeks"]) == ("low", 5)
    # The URL is the view: opened afresh, it shows the same numbers.
    shared = await open_page(browser, page.url)
    assert await tiles(shared.page) == await tiles(page)
    assert await shared.page.input_value("#repository") == "acme/web"
    # Back goes to the previous filters.
    await page.go_back()
    await expect(frequency_tile).not_to_have_attribute("data-value", "0")
    assert float(
        (await tiles(page))[("acme/web", "deployment_frequency")]["value"]
    ) == pytest.approx(1 / 31)
    assert opened.errors == shared.errors == []
    await page.close()
    await shared.page.close()


async def test_the_default_window_is_the_last_90_days(site: Site, browser: Browser) -> None:
    opened = await open_page(browser, f"{site.url}/insights")
    _, report, _ = await site.get("/insights/api/dora")
    assert report["filters"]["days"] == 90
    assert await opened.page.input_value("#to") == report["filters"]["to"]
    assert await opened.page.input_value("#from") == report["filters"]["from"]
    assert opened.errors == []
    await opened.page.close()


async def test_an_empty_store_reads_as_empty(empty_site: Site, browser: Browser) -> None:
    status, report, _ = await empty_site.get("/insights/api/dora")
    assert status == 200
    assert (report["repositories"], report["dora"]) == ([], [])
    assert report["flow"]["missing"].startswith("No pull_request deliveries yet")
    assert report["ci"]["missing"].startswith("No workflow_run deliveries yet")
    opened = await open_page(browser, f"{empty_site.url}/insights", state="empty")
    status_text = await opened.page.text_content("#status")
    assert status_text is not None
    assert status_text.startswith("No deliveries yet.")
    assert "Deployment statuses" in status_text
    for section in ("#dora-section", "#flow-section", "#ci-section"):
        assert not await opened.page.is_visible(section)
    assert await opened.page.query_selector_all("svg") == []
    assert opened.errors == []
    await opened.page.close()

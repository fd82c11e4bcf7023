// The insights page: reads the filters from the URL, fetches /insights/api/dora with them,
// and draws what it returns. Every number shown comes from that document; text is set
// with textContent only, so nothing from the data is ever parsed as HTML.

const SVG = "http://www.w3.org/2000/svg";
const KEYS = [
  ["deployment_frequency", "Deployment frequency"],
  ["lead_time", "Lead time for changes"],
  ["change_failure_rate", "Change failure rate"],
  ["time_to_restore", "Time to restore"],
];
const STAGES = [
  ["coding", "Coding"],
  ["pickup", "Pickup"],
  ["review", "Review"],
  ["deploy", "Deploy"],
];
const FILTERS = ["repository", "from", "to"];

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const units = [["d", 86400], ["h", 3600], ["min", 60]];
  const parts = [];
  let rest = s;
  for (const [name, size] of units) {
    const n = Math.floor(rest / size);
    if (n > 0 || parts.length > 0) parts.push(`${n} ${name}`);
    rest -= n * size;
    if (parts.length === 2) break;
  }
  return parts.filter((p) => !p.startsWith("0 ")).join(" ") || `${s} s`;
}

function percent(ratio) {
  return ratio === null || ratio === undefined ? "—" : `${(ratio * 100).toFixed(1).replace(/\.0$/, "")} %`;
}

function perDay(value) {
  if (value === null || value === undefined) return "—";
  return `${value >= 10 ? value.toFixed(0) : value.toFixed(2)} / day`;
}

const FORMAT = {
  deployment_frequency: perDay,
  lead_time: duration,
  change_failure_rate: percent,
  time_to_restore: duration,
};
const TREND_FORMAT = {
  deployment_frequency: (v) => `${v} deployment${v === 1 ? "" : "s"}`,
  lead_time: duration,
  change_failure_rate: percent,
  time_to_restore: duration,
};

function countText(metric, figure) {
  switch (metric) {
    case "deployment_frequency":
      return `${figure.count} deployment${figure.count === 1 ? "" : "s"}`;
    case "lead_time":
      return `${figure.count} change${figure.count === 1 ? "" : "s"} deployed`;
    case "change_failure_rate":
      return `${figure.failed_deployments} of ${figure.count} deployments failed`;
    default:
      return `${figure.count} incident${figure.count === 1 ? "" : "s"} restored`;
  }
}

// A bar per week; weeks without a value get a short grey mark, never a zero bar.
function trendChart(metric, trend, weeks) {
  const width = 240;
  const height = 56;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "trend");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  const values = trend.filter((v) => v !== null);
  const max = Math.max(...values, 0);
  const step = width / Math.max(trend.length, 1);
  let drawn = 0;
  trend.forEach((value, i) => {
    const rect = document.createElementNS(SVG, "rect");
    const barHeight = value === null ? 2 : max > 0 ? Math.max(2, (value / max) * (height - 4)) : 2;
    rect.setAttribute("x", (i * step + 1).toFixed(1));
    rect.setAttribute("width", Math.max(step - 2, 1).toFixed(1));
    rect.setAttribute("y", (height - barHeight).toFixed(1));
    rect.setAttribute("height", barHeight.toFixed(1));
    rect.setAttribute("class", value === null ? "gap" : "bar");
    rect.setAttribute("data-week", weeks[i]);
    if (value !== null) {
      rect.setAttribute("data-value", value);
      drawn += 1;
    }
    const title = document.createElementNS(SVG, "title");
    title.textContent = `week of ${weeks[i]}: ${value === null ? "no data" : TREND_FORMAT[metric](value)}`;
    rect.appendChild(title);
    svg.appendChild(rect);
  });
  svg.setAttribute("data-weeks", trend.length);
  svg.setAttribute("data-drawn", drawn);
  svg.setAttribute("aria-label", `weekly trend, ${drawn} of ${trend.length} weeks with data`);
  return svg;
}

function tile(repository, metric, label, figure, weeks) {
  const node = el("div", {
    class: "tile",
    "data-metric": metric,
    "data-repository": repository,
    "data-value": figure.value === null ? "" : figure.value,
    "data-band": figure.band ?? "",
  });
  node.append(el("h4", {}, label));
  node.append(el("p", { class: "value" }, FORMAT[metric](figure.value)));
  if (figure.band) node.append(el("span", { class: `band band-${figure.band}` }, figure.band));
  if (figure.missing) {
    node.append(el("p", { class: "missing" }, figure.missing));
  } else {
    node.append(el("p", { class: "count" }, countText(metric, figure)));
    node.append(trendChart(metric, figure.trend, weeks));
  }
  if (figure.note) node.append(el("p", { class: "note" }, figure.note));
  return node;
}

function drawDora(report) {
  const root = document.getElementById("dora");
  root.replaceChildren();
  for (const row of report.dora) {
    const group = el("section", { class: "repository", "data-repository": row.repository });
    group.append(el("h3", {}, row.repository));
    const tiles = el("div", { class: "tiles" });
    for (const [metric, label] of KEYS) tiles.append(tile(row.repository, metric, label, row[metric], report.weeks));
    group.append(tiles);
    root.append(group);
  }
}

function drawFlow(flow) {
  const root = document.getElementById("flow");
  root.replaceChildren();
  for (const [stage, label] of STAGES) {
    const value = flow[`${stage}_seconds`];
    const node = el("div", { class: "tile stage", "data-stage": stage, "data-value": value ?? "" });
    node.append(el("h4", {}, label), el("p", { class: "value" }, duration(value)));
    root.append(node);
  }
  const missing = document.getElementById("flow-missing");
  missing.hidden = !flow.missing;
  missing.textContent = flow.missing ?? "";
  const body = document.querySelector("#slowest tbody");
  body.replaceChildren();
  const now = Date.now();
  for (const pr of flow.slowest_open) {
    const row = el("tr", { "data-repository": pr.repository, "data-pr": pr.pr_number });
    const age = (now - Date.parse(pr.opened_at)) / 1000;
    row.append(
      el("td", {}, pr.repository),
      el("td", {}, `#${pr.pr_number} ${pr.title}`),
      el("td", {}, pr.author_login),
      el("td", { "data-opened-at": pr.opened_at }, duration(age)),
    );
    body.append(row);
  }
  document.getElementById("slowest-empty").hidden = flow.slowest_open.length > 0;
}

function drawCi(ci) {
  const body = document.querySelector("#ci tbody");
  body.replaceChildren();
  for (const w of ci.workflows) {
    const row = el("tr", { "data-repository": w.repository, "data-workflow": w.workflow });
    row.append(
      el("td", {}, w.repository),
      el("td", {}, w.workflow),
      el("td", { "data-column": "runs", "data-value": w.runs }, String(w.runs)),
      el("td", { "data-column": "success_rate", "data-value": w.success_rate }, percent(w.success_rate)),
      el("td", { "data-column": "p50_seconds", "data-value": w.p50_seconds }, duration(w.p50_seconds)),
      el("td", { "data-column": "p90_seconds", "data-value": w.p90_seconds }, duration(w.p90_seconds)),
    );
    body.append(row);
  }
  const missing = document.getElementById("ci-missing");
  missing.hidden = !ci.missing;
  missing.textContent = ci.missing ?? "";
}

function drawFilters(report) {
  const select = document.getElementById("repository");
  const chosen = report.filters.repository ?? "";
  select.replaceChildren(el("option", { value: "" }, "All repositories"));
  const names = new Set(report.repositories);
  if (chosen) names.add(chosen);
  for (const name of [...names].sort()) select.append(el("option", { value: name }, name));
  select.value = chosen;
  document.getElementById("from").value = report.filters.from;
  document.getElementById("to").value = report.filters.to;
}

function show(id, visible) {
  document.getElementById(id).hidden = !visible;
}

let latest = 0;

async function load() {
  // Filters can change faster than answers come back: only the newest answer is drawn.
  const ticket = ++latest;
  const status = document.getElementById("status");
  const query = new URLSearchParams();
  const params = new URLSearchParams(location.search);
  for (const name of FILTERS) if (params.get(name)) query.set(name, params.get(name));
  const api = `/insights/api/dora?${query}`;
  document.getElementById("api-link").setAttribute("href", api);
  document.body.setAttribute("data-state", "loading");
  const response = await fetch(api);
  const report = await response.json();
  if (ticket !== latest) return;
  if (!response.ok) {
    status.textContent = report.error;
    document.body.setAttribute("data-state", "error");
    return;
  }
  drawFilters(report);
  const empty = report.repositories.length === 0;
  status.textContent = empty
    ? "No deliveries yet. Point the GitHub App's webhook at the ingress (POST /webhook) and " +
      "subscribe it to Pull requests, Pull request reviews, Pushes, Deployment statuses, Issues " +
      "and Workflow runs; the keys appear as their events arrive."
    : `${report.repositories.length} repositor${report.repositories.length === 1 ? "y" : "ies"}, ` +
      `${report.filters.from} to ${report.filters.to} (${report.filters.days} days).`;
  show("dora-section", !empty);
  show("flow-section", !empty);
  show("ci-section", !empty);
  if (!empty) {
    drawDora(report);
    drawFlow(report.flow);
    drawCi(report.ci);
  }
  document.body.setAttribute("data-state", empty ? "empty" : "ready");
}

function onFilterChange() {
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    const value = document.getElementById(name).value;
    if (value) params.set(name, value);
  }
  const next = `${location.pathname}?${params}`;
  if (next === `${location.pathname}${location.search}`) return;
  history.pushState(null, "", next);
  load();
}

for (const name of FILTERS) document.getElementById(name).addEventListener("change", onFilterChange);
window.addEventListener("popstate", load);
load();

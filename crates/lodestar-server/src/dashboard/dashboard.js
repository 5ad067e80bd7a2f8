// The Lodestar dashboard: asks the JSON API of the server that served this page and draws
// the answers (SVG charts, the metric tree, the retention heat map). No framework, no build.
// It decides nothing and formats no number: the grain, the last complete period, where
// retention comes from and every number's text come from the API (/api/v1/overview and
// /api/v1/metrics/{name}/chart, by the rules of `lodestar report`).
"use strict";

// Errors of this page, for people (the status line) and for the browser test.
window.__errors = [];
window.addEventListener("error", (e) => window.__errors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => window.__errors.push(String(e.reason)));

const SVG = "http://www.w3.org/2000/svg";
const TOKEN_KEY = "lodestar.token";
const PALETTE = ["#2f6fde", "#e4572e", "#17a398", "#f3a712", "#8e44ad", "#5f6b7a",
  "#c0392b", "#1f8a4c", "#d35400", "#34495e"];

const $ = (id) => document.getElementById(id);

/** The API said 401: the user has to give a token first. */
class NeedsToken extends Error {}

/** GET an API path as JSON, with the bearer token when one was given. */
async function api(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { headers });
  if (response.status === 401) throw new NeedsToken("this server needs an API token");
  const body = await response.json();
  if (!response.ok) {
    const e = body.error || {};
    throw new Error(`${path}: ${e.message || response.status}${e.hint ? ` (${e.hint})` : ""}`);
  }
  return body;
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

/** Shows a failure; a missing token opens the token form instead. */
function failed(error) {
  if (error instanceof NeedsToken) {
    $("token-form").hidden = false;
    status(sessionStorage.getItem(TOKEN_KEY) ? "The token was refused." : "");
    document.body.dataset.state = "needs-token";
    return;
  }
  window.__errors.push(String(error.message || error));
  status(String(error.message || error), true);
}

// ---------------------------------------------------------------------------------------
// Charts.

/**
 * A chart as the API gives it (`{series: [{name, points: [{period, value, text, complete}]}],
 * ticks: [{value, text}]}`) into `container`. Complete periods are a solid line; the ones after
 * the last complete period a dashed one. Every point is a circle with its period and text.
 */
function lineChart(container, chart, label) {
  container.replaceChildren();
  const W = 720, H = 260, left = 64, right = 16, top = 12, bottom = 28;
  const series = chart.series;
  const periods = [...new Set(series.flatMap((s) => s.points.map((p) => p.period)))].sort();
  const svgChart = svg("svg", {
    viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label,
    "data-series-count": series.length,
  });
  container.append(svgChart);
  if (!periods.length || !chart.ticks.length) {
    svgChart.append(svg("text", { x: left, y: H / 2 }, "no data"));
    return;
  }
  const lo = chart.ticks[0].value, hi = chart.ticks[chart.ticks.length - 1].value;
  const x = (period) => left + (periods.length === 1 ? 0.5 : periods.indexOf(period) / (periods.length - 1))
    * (W - left - right);
  const y = (v) => top + (1 - (v - lo) / (hi - lo || 1)) * (H - top - bottom);
  svgChart.append(svg("line", { class: "axis", x1: left, x2: W - right, y1: y(lo), y2: y(lo) }));
  svgChart.append(svg("line", { class: "axis", x1: left, x2: left, y1: top, y2: H - bottom }));
  for (const tick of chart.ticks) {
    svgChart.append(svg("text", { x: left - 6, y: y(tick.value) + 4, "text-anchor": "end" }, tick.text));
  }
  svgChart.append(svg("text", { x: left, y: H - 8 }, periods[0]));
  svgChart.append(svg("text", { x: W - right, y: H - 8, "text-anchor": "end" }, periods[periods.length - 1]));
  const path = (points) => points
    .map((p, j) => `${j ? "L" : "M"}${x(p.period).toFixed(1)},${y(p.value).toFixed(1)}`).join("");
  series.forEach((s, i) => {
    const colour = PALETTE[i % PALETTE.length];
    const points = s.points.filter((p) => p.value !== null);
    const complete = points.filter((p) => p.complete);
    svgChart.append(svg("path", {
      class: "line", d: path(complete), fill: "none", stroke: colour, "stroke-width": 2, "data-series": s.name,
    }));
    if (complete.length < points.length) {
      // From the last complete point on, dashed: a period the data covers in part.
      const rest = points.slice(Math.max(complete.length - 1, 0));
      svgChart.append(svg("path", {
        class: "partial", d: path(rest), fill: "none", stroke: colour, "stroke-width": 1.5,
        "stroke-dasharray": "3 3", "data-series": s.name,
      }));
    }
    for (const p of points) {
      const dot = svg("circle", {
        class: p.complete ? "point" : "point partial", cx: x(p.period).toFixed(1), cy: y(p.value).toFixed(1), r: 2.5,
        fill: p.complete ? colour : "#fff", stroke: colour, "data-series": s.name, "data-period": p.period,
        "data-value": p.value, "data-complete": p.complete,
      });
      dot.append(svg("title", {}, `${s.name} ${p.period}: ${p.text}${p.complete ? "" : " (incomplete)"}`));
      svgChart.append(dot);
    }
  });
}

// ---------------------------------------------------------------------------------------
// The page.

const state = { metrics: new Map(), grain: "week" };

async function load() {
  document.body.dataset.state = "loading";
  status("Loading…");
  try {
    const list = await api("/api/v1/metrics");
    state.metrics = new Map(list.metrics.map((m) => [m.name, m]));
    const overview = await api("/api/v1/overview");
    state.grain = overview.grain;
    $("token-form").hidden = true;
    $("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
    northStar(overview);
    drawTree(overview);
    await retentionFromSettings(overview.retention);
    status("");
    document.body.dataset.state = "ready";
  } catch (error) {
    failed(error);
    if (!(error instanceof NeedsToken)) document.body.dataset.state = "error";
  }
}

function northStar(overview) {
  const head = overview.north_star;
  if (!head) {
    $("ns-name").textContent = "No metrics";
    return;
  }
  $("ns-name").textContent = head.metric;
  $("ns-name").dataset.metric = head.metric;
  $("ns-description").textContent = head.description || "";
  $("ns-value").textContent = head.value_text;
  $("ns-value").dataset.value = head.value ?? "";
  $("ns-period").textContent = head.period_text;
  $("ns-change").textContent = head.change_text;
  $("ns-change").className = `change ${head.change > 0 ? "up" : head.change < 0 ? "down" : ""}`;
  lineChart($("ns-chart"), head.chart, `${head.metric} by ${overview.grain}`);
  if (head.target) {
    $("ns-target").textContent = head.target.text;
    $("ns-target").dataset.status = head.target.status;
  } else {
    $("ns-target").textContent = "No target set.";
  }
}

function drawTree(overview) {
  $("tree-period").textContent = overview.period_text;
  const list = $("tree");
  list.replaceChildren(...overview.roots.map(treeItem));
}

function treeItem(node) {
  const li = el("li", { "data-metric": node.metric });
  const button = el("button", {
    type: "button", class: "metric", "data-metric": node.metric, "aria-pressed": "false",
  }, node.metric);
  button.addEventListener("click", () => drill(node.metric).catch(failed));
  const direction = node.change > 0 ? "up" : node.change < 0 ? "down" : "";
  const numbers = el("span", {
    class: `numbers ${direction}`,
    "data-value": node.value ?? "",
    "data-change": node.change ?? "",
    "data-contribution": node.contribution ?? "",
  }, node.text);
  li.append(button, numbers);
  for (const g of node.guardrails || []) {
    li.append(el("span", { class: "numbers", "data-guardrail": g.metric }, g.text));
  }
  if (node.inputs.length) {
    const inputs = el("ul");
    inputs.append(...node.inputs.map(treeItem));
    li.append(inputs);
  }
  return li;
}

/** One metric's chart, optionally broken down by one of its dimensions. */
async function drill(metric, dimension = "") {
  const section = $("drill");
  section.hidden = false;
  section.dataset.state = "loading";
  section.dataset.metric = metric;
  for (const b of document.querySelectorAll("#tree .metric")) {
    b.setAttribute("aria-pressed", String(b.dataset.metric === metric));
  }
  const info = state.metrics.get(metric) || { dimensions: [] };
  $("drill-title").textContent = metric;
  $("drill-description").textContent = info.description || "";
  const select = $("drill-dimension");
  select.replaceChildren(el("option", { value: "" }, "(none)"),
    ...info.dimensions.map((d) => el("option", { value: d }, d)));
  select.value = dimension;
  select.disabled = !info.dimensions.length;
  let path = `/api/v1/metrics/${encodeURIComponent(metric)}/chart?grain=${state.grain}`;
  if (dimension) path += `&by=${encodeURIComponent(dimension)}`;
  const chart = await api(path);
  if (section.dataset.metric !== metric) return; // another click came first
  lineChart($("drill-chart"), chart, `${metric} by ${state.grain}`);
  $("drill-legend").replaceChildren(...(dimension ? chart.series : []).map((s, i) => {
    const swatch = svg("svg", { class: "swatch", viewBox: "0 0 10 10" });
    swatch.append(svg("rect", { width: 10, height: 10, fill: PALETTE[i % PALETTE.length] }));
    const item = el("li", { "data-series": s.name });
    item.append(swatch, document.createTextNode(s.name));
    return item;
  }));
  section.dataset.dimension = dimension;
  section.dataset.state = "ready";
  section.scrollIntoView({ block: "nearest" });
}

// ---------------------------------------------------------------------------------------
// Retention.

/** The heat map's settings: the page's query string, else what the API says (the project's
 * retention metric). */
async function retentionFromSettings(defaults) {
  const query = new URLSearchParams(location.search);
  const fields = ["cohort", "activity", "entity", "grain", "periods"];
  const settings = {};
  for (const f of fields) settings[f] = query.get(f) || "";
  if (!settings.cohort && defaults.cohort) {
    settings.cohort = defaults.cohort;
    settings.activity = defaults.activity;
    settings.entity = defaults.entity;
  }
  if (!settings.grain) settings.grain = defaults.grain;
  if (!settings.periods) settings.periods = String(defaults.periods);
  for (const f of fields) if (settings[f]) $(`retention-${f}`).value = settings[f];
  if (!settings.cohort || !settings.activity || !settings.entity) {
    $("retention-note").textContent = defaults.note || "";
    return;
  }
  await retention();
}

async function retention() {
  const params = new URLSearchParams();
  for (const f of ["cohort", "activity", "entity", "grain", "periods"]) {
    const value = $(`retention-${f}`).value.trim();
    if (value) params.set(f, value);
  }
  const box = $("retention");
  box.dataset.state = "loading";
  const body = await api(`/api/v1/retention?${params}`);
  $("retention-note").textContent =
    `Share of each ${body.grain}'s cohort active again n ${body.grain}s later.`;
  heatMap(box, body);
  box.dataset.state = "ready";
}

function heatMap(box, body) {
  box.replaceChildren();
  const cohorts = [...new Set(body.cells.map((c) => c.cohort))];
  const cellW = 46, cellH = 20, left = 150, top = 20;
  const W = left + body.periods.length * cellW + 4, H = top + cohorts.length * cellH + 4;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "retention" });
  body.periods.forEach((p, j) => chart.append(
    svg("text", { x: left + j * cellW + cellW / 2, y: 14, "text-anchor": "middle" }, p)));
  const size = new Map(body.cells.map((c) => [c.cohort, c.cohort_size]));
  cohorts.forEach((cohort, i) => chart.append(svg("text", { x: left - 6, y: top + i * cellH + 14, "text-anchor": "end" },
    `${cohort} (${size.get(cohort)})`)));
  for (const c of body.cells) {
    const i = cohorts.indexOf(c.cohort), j = body.periods.indexOf(c.period);
    const g = svg("g", {
      class: "cell", "data-cohort": c.cohort, "data-period": c.period,
      "data-rate": c.rate ?? "", "data-eligible": c.eligible,
    });
    const shade = c.rate === null ? "#eef0f3" : `rgba(47, 111, 222, ${(0.08 + 0.92 * c.rate).toFixed(3)})`;
    g.append(svg("rect", { x: left + j * cellW, y: top + i * cellH, width: cellW - 2, height: cellH - 2, fill: shade }));
    if (c.rate !== null) {
      g.append(svg("text", {
        class: c.rate > 0.55 ? "rate dark" : "rate", x: left + j * cellW + cellW / 2 - 1, y: top + i * cellH + 13, "text-anchor": "middle",
      }, c.rate_text));
    }
    g.append(svg("title", {}, `cohort ${c.cohort}, ${body.grain} ${c.period}: ${c.retained} of ${c.cohort_size}`));
    chart.append(g);
  }
  box.append(chart);
}

// ---------------------------------------------------------------------------------------
// Wiring.

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    load();
  });
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  $("drill-dimension").addEventListener("change", (e) => {
    drill($("drill").dataset.metric, e.target.value).catch(failed);
  });
  $("retention-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const query = new URLSearchParams();
    for (const f of ["cohort", "activity", "entity", "grain", "periods"]) {
      const value = $(`retention-${f}`).value.trim();
      if (value) query.set(f, value);
    }
    history.replaceState(null, "", `?${query}`);
    retention().catch(failed);
  });
  load();
});

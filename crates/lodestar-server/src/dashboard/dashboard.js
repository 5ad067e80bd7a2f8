// The Lodestar dashboard: asks the JSON API of the server that served this page and draws
// the answers (SVG charts, the metric tree, the retention heat map). No framework, no build.
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
const number = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
const fmt = (x) => (x === null || x === undefined ? "–" : number.format(x));
const pct = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)}%`);
const signed = (x) => (x === null || x === undefined ? "–" : (x > 0 ? "+" : "") + fmt(x));

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
 * A line chart of one or more series, each `{name, points: [{period, value}]}` (value may
 * be null: a gap), into `container`. Every point is a circle with its period and value.
 */
function lineChart(container, series, label) {
  container.replaceChildren();
  const W = 720, H = 260, left = 64, right = 16, top = 12, bottom = 28;
  const periods = [...new Set(series.flatMap((s) => s.points.map((p) => p.period)))].sort();
  const values = series.flatMap((s) => s.points.map((p) => p.value)).filter((v) => v !== null);
  const chart = svg("svg", {
    viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label,
    "data-series-count": series.length,
  });
  container.append(chart);
  if (!periods.length || !values.length) {
    chart.append(svg("text", { x: left, y: H / 2 }, "no data"));
    return;
  }
  let lo = Math.min(0, ...values), hi = Math.max(...values);
  if (hi === lo) hi = lo + 1;
  const x = (period) => left + (periods.length === 1 ? 0.5 : periods.indexOf(period) / (periods.length - 1))
    * (W - left - right);
  const y = (v) => top + (1 - (v - lo) / (hi - lo)) * (H - top - bottom);
  chart.append(svg("line", { class: "axis", x1: left, x2: W - right, y1: y(lo), y2: y(lo) }));
  chart.append(svg("line", { class: "axis", x1: left, x2: left, y1: top, y2: H - bottom }));
  for (const v of [lo, (lo + hi) / 2, hi]) {
    chart.append(svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
  }
  chart.append(svg("text", { x: left, y: H - 8 }, periods[0]));
  chart.append(svg("text", { x: W - right, y: H - 8, "text-anchor": "end" }, periods[periods.length - 1]));
  series.forEach((s, i) => {
    const colour = PALETTE[i % PALETTE.length];
    const points = s.points.filter((p) => p.value !== null);
    const d = points.map((p, j) => `${j ? "L" : "M"}${x(p.period).toFixed(1)},${y(p.value).toFixed(1)}`).join("");
    chart.append(svg("path", {
      class: "line", d, fill: "none", stroke: colour, "stroke-width": 2, "data-series": s.name,
    }));
    for (const p of points) {
      const dot = svg("circle", {
        class: "point", cx: x(p.period).toFixed(1), cy: y(p.value).toFixed(1), r: 2.5,
        fill: colour, "data-series": s.name, "data-period": p.period, "data-value": p.value,
      });
      dot.append(svg("title", {}, `${s.name} ${p.period}: ${fmt(p.value)}`));
      chart.append(dot);
    }
  });
}

/** Series rows (`period`, dimension columns, the metric) as one series per dimension value. */
function toSeries(body, dimension) {
  const groups = new Map();
  for (const row of body.rows) {
    const name = dimension ? String(row[dimension] ?? "(null)") : body.metric;
    if (!groups.has(name)) groups.set(name, []);
    groups.get(name).push({ period: row.period, value: row[body.metric] });
  }
  return [...groups].map(([name, points]) => ({ name, points }));
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
    const tree = await api("/api/v1/tree");
    state.grain = tree.grain;
    $("token-form").hidden = true;
    $("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
    await Promise.all([northStar(tree), drawTree(tree), retentionFromSettings(list)]);
    status("");
    document.body.dataset.state = "ready";
  } catch (error) {
    failed(error);
    if (!(error instanceof NeedsToken)) document.body.dataset.state = "error";
  }
}

async function northStar(tree) {
  const root = tree.roots[0];
  if (!root) {
    $("ns-name").textContent = "No metrics";
    return;
  }
  const info = state.metrics.get(root.metric) || {};
  $("ns-name").textContent = root.metric;
  $("ns-name").dataset.metric = root.metric;
  $("ns-description").textContent = info.description || "";
  $("ns-value").textContent = fmt(root.value);
  $("ns-value").dataset.value = root.value ?? "";
  $("ns-period").textContent = `${tree.grain} of ${tree.period}`;
  $("ns-change").textContent = `${signed(root.change)} (${pct(root.relative_change)}) vs ${tree.previous_period}`;
  $("ns-change").className = `change ${root.change > 0 ? "up" : root.change < 0 ? "down" : ""}`;
  const [series, targets] = await Promise.all([
    api(`/api/v1/metrics/${encodeURIComponent(root.metric)}/series?grain=${tree.grain}`),
    info.target ? api(`/api/v1/targets?metric=${encodeURIComponent(root.metric)}`) : null,
  ]);
  lineChart($("ns-chart"), toSeries(series), `${root.metric} by ${tree.grain}`);
  const target = targets && targets.targets[0];
  if (target) {
    const t = target.target;
    $("ns-target").textContent = `Target ${fmt(t.value)} per ${t.period} by ${t.by}: `
      + `${fmt(target.actual)} in the ${t.period} of ${target.period}, `
      + `${fmt(target.projected)} projected — ${target.status.replace(/_/g, " ")}`;
    $("ns-target").dataset.status = target.status;
  } else {
    $("ns-target").textContent = "No target set.";
  }
}

function drawTree(tree) {
  $("tree-period").textContent = `${tree.grain} of ${tree.period} against ${tree.previous_period}`;
  const list = $("tree");
  list.replaceChildren(...tree.roots.map(treeItem));
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
  });
  let text = `${fmt(node.value)} · ${signed(node.change)} (${pct(node.relative_change)})`;
  if (!node.north_star && node.contribution !== null) text += ` · contributes ${signed(node.contribution)}`;
  numbers.textContent = text;
  li.append(button, numbers);
  for (const g of node.guardrails || []) {
    li.append(el("span", { class: "numbers", "data-guardrail": g.metric },
      ` · guardrail ${g.metric} ${fmt(g.value)}${g.breached ? " (breached)" : ""}`));
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
  let path = `/api/v1/metrics/${encodeURIComponent(metric)}/series?grain=${state.grain}`;
  if (dimension) path += `&by=${encodeURIComponent(dimension)}`;
  const body = await api(path);
  if (section.dataset.metric !== metric) return; // another click came first
  const series = toSeries(body, dimension);
  lineChart($("drill-chart"), series, `${metric} by ${state.grain}`);
  $("drill-legend").replaceChildren(...(dimension ? series : []).map((s, i) => {
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

/** The heat map's settings: the page's query string, else the project's retention metric. */
async function retentionFromSettings(list) {
  const query = new URLSearchParams(location.search);
  const fields = ["cohort", "activity", "entity", "grain", "periods"];
  const defined = list.metrics.find((m) => m.definition.kind === "retention");
  const settings = {};
  for (const f of fields) settings[f] = query.get(f) || "";
  if (!settings.cohort && defined) {
    settings.cohort = defined.definition.cohort;
    settings.activity = defined.definition.activity;
    settings.entity = defined.definition.entity;
  }
  for (const f of fields) if (settings[f]) $(`retention-${f}`).value = settings[f];
  if (!settings.cohort || !settings.activity || !settings.entity) {
    $("retention-note").textContent = "Name the cohort and activity time columns "
      + "(source.table.column) and the entity column to see retention.";
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
    `${cohort} (${fmt(size.get(cohort))})`)));
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
      }, pct(c.rate)));
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

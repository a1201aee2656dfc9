// The analysts' page. Everything goes through the public API with the user's key, which is kept
// in sessionStorage and sent only as "Authorization: Bearer ..." (never in an address or a log).
"use strict";

const KEY_SLOT = "csp-hub-key";
const COLOURS = ["#f7fbff", "#c6dbef", "#6baed6", "#2171b5", "#08306b"];
const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
// A cell is suppressed when its count is withheld or it says so, whatever reason it gives
// ("primary", "secondary", true): never drawn or written as zero.
const isSuppressed = (cell) => !cell || cell.count === null || cell.count === undefined || Boolean(cell.suppressed);

class Problem extends Error {
  constructor(status, body) {
    super((body && body.detail) || `The hub answered ${status}.`);
    this.status = status;
    this.rule = body && body.rule;
  }
}

async function api(path, params, accept) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY_SLOT) || ""}` };
  if (accept) headers.Accept = accept;
  let response;
  try {
    response = await fetch(url, { headers, credentials: "omit", cache: "no-store" });
  } catch (_error) {
    throw new Problem(0, { detail: "The hub cannot be reached." });
  }
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch (_error) { body = null; }
    throw new Problem(response.status, body);
  }
  return response;
}

const json = async (path, params) => (await api(path, params, "application/json")).json();

function showProblem(error) {
  const box = $("problem");
  box.textContent = "";
  const detail = document.createElement("span");
  detail.className = "detail";
  detail.textContent = error instanceof Problem ? error.message : String(error);
  box.append(detail);
  if (error.rule) {
    const rule = document.createElement("span");
    rule.className = "rule";
    rule.textContent = ` Rule: ${error.rule}.`;
    box.append(rule);
  }
  box.hidden = false;
}

function clearProblem() {
  $("problem").hidden = true;
  $("problem").textContent = "";
}

async function guarded(action) {
  clearProblem();
  try {
    await action();
  } catch (error) {
    showProblem(error);
  }
}

function element(tag, text, className) {
  const made = document.createElement(tag);
  if (text !== undefined && text !== null) made.textContent = String(text);
  if (className) made.className = className;
  return made;
}

// ------------------------------------------------------------------ signing in

async function signIn() {
  const me = await json("/v1/me");
  const agency = me.agency || {};
  $("who").textContent = `Signed in as ${agency.name || agency.code} (${(me.roles || []).join(", ")})`;
  $("login").hidden = true;
  $("workspace").hidden = false;
  $("logout").hidden = false;
  await loadChoices();
  await draw();
}

function signOut() {
  sessionStorage.removeItem(KEY_SLOT);
  window.location.reload();
}

async function loadChoices() {
  const datasets = await json("/v1/datasets");
  fill($("dataset"), (datasets.datasets || datasets).map((d) => [d.name, d.title || d.name]), "police-crime");
  const geographies = await json("/v1/geographies");
  const layers = (geographies.layers || geographies.geographies || geographies)
    .filter((l) => !l.status || l.status === "active");
  fill($("layer"), layers.map((l) => [l.name, `${l.name} (${l.areas} areas)`]), "demo-grid");
}

function fill(select, options, preferred) {
  select.textContent = "";
  for (const [value, label] of options) {
    const option = element("option", label);
    option.value = value;
    select.append(option);
  }
  if (options.some(([value]) => value === preferred)) select.value = preferred;
}

// ------------------------------------------------------------------ the map

const state = { answer: null, periods: [], map: null, areas: null, points: null, timings: {} };

function ensureMap() {
  if (state.map) return state.map;
  const map = L.map("map", { attributionControl: false, zoomSnap: 0.25, preferCanvas: false });
  map.setView([53.48, -2.24], 12);
  // A hatch pattern for suppressed areas, inside Leaflet's own SVG layer.
  const renderer = L.svg({ padding: 0.5 });
  renderer.addTo(map);
  const defs = document.createElementNS(SVG_NS, "defs");
  defs.append(hatchPattern("hatch"));
  renderer._container.prepend(defs);
  state.renderer = renderer;
  state.map = map;
  return map;
}

function hatchPattern(id) {
  const pattern = document.createElementNS(SVG_NS, "pattern");
  pattern.setAttribute("id", id);
  pattern.setAttribute("patternUnits", "userSpaceOnUse");
  pattern.setAttribute("width", "8");
  pattern.setAttribute("height", "8");
  pattern.setAttribute("patternTransform", "rotate(45)");
  const ground = document.createElementNS(SVG_NS, "rect");
  ground.setAttribute("width", "8");
  ground.setAttribute("height", "8");
  ground.setAttribute("fill", "#ffffff");
  const stripe = document.createElementNS(SVG_NS, "rect");
  stripe.setAttribute("width", "3");
  stripe.setAttribute("height", "8");
  stripe.setAttribute("fill", "#555555");
  pattern.append(ground, stripe);
  return pattern;
}

function query() {
  return {
    geography: $("layer").value,
    period: $("period").value,
    from: $("from").value,
    to: $("to").value,
  };
}

async function draw() {
  const dataset = $("dataset").value;
  const response = await api(`/v1/datasets/${encodeURIComponent(dataset)}/aggregates`,
    { ...query(), format: "geojson" }, "application/geo+json");
  const answer = await response.json();
  const started = performance.now();
  state.answer = answer;
  state.periods = [...new Set(answer.features.flatMap((f) => f.properties.cells.map((c) => c.period)))].sort();
  fill($("map-period"), state.periods.map((p) => [p, p]), state.periods[0]);
  // The time series starts on the busiest area; any other can be chosen, or clicked on the map.
  const total = (f) => f.properties.cells.reduce((sum, c) => sum + (c.count || 0), 0);
  const busiest = answer.features.reduce((best, f) => (best && total(best) >= total(f) ? best : f), null);
  fill($("series-area"), answer.features.map((f) => [f.properties.area, `${f.properties.area_name} (${f.properties.area})`]),
    busiest && busiest.properties.area);
  renderAreas();
  renderDisclosure(answer.disclosure || {});
  renderTable();
  renderSeries();
  state.timings.draw_ms = performance.now() - started;
  $("map").dataset.drawMs = state.timings.draw_ms.toFixed(1);
  $("map").dataset.areas = String(answer.features.length);
}

function cellOf(feature, period) {
  return feature.properties.cells.find((c) => c.period === period && !c.category) ||
    feature.properties.cells.find((c) => c.period === period);
}

function classes(counts) {
  // Zero has its own class; published counts above zero split into four classes by quantile.
  const positive = counts.filter((c) => c > 0).sort((a, b) => a - b);
  if (!positive.length) return [];
  const breaks = [];
  for (let i = 1; i <= 4; i += 1) {
    const value = positive[Math.min(positive.length - 1, Math.ceil((positive.length * i) / 4) - 1)];
    if (!breaks.length || value > breaks[breaks.length - 1]) breaks.push(value);
  }
  return breaks;
}

function colourOf(count, breaks) {
  if (count === 0) return COLOURS[0];
  const index = breaks.findIndex((upper) => count <= upper);
  return COLOURS[1 + (index < 0 ? breaks.length - 1 : index) + (4 - breaks.length)];
}

function renderAreas() {
  const map = ensureMap();
  const period = $("map-period").value;
  const features = state.answer.features;
  const counts = features.map((f) => cellOf(f, period)).filter((c) => !isSuppressed(c)).map((c) => c.count);
  const breaks = classes(counts);
  if (state.areas) state.areas.remove();
  state.areas = L.geoJSON({ type: "FeatureCollection", features: features.filter((f) => f.geometry) }, {
    renderer: state.renderer,
    style: (feature) => {
      const cell = cellOf(feature, period);
      const hidden = isSuppressed(cell);
      return {
        color: "#333333",
        weight: 1,
        fillOpacity: hidden ? 1 : 0.85,
        fillColor: hidden ? "url(#hatch)" : colourOf(cell.count, breaks),
      };
    },
    onEachFeature: (feature, layer) => {
      const cell = cellOf(feature, period);
      const hidden = isSuppressed(cell);
      const shown = hidden ? "suppressed (not zero, not shown)" : cell.count;
      const label = element("span", `${feature.properties.area_name}: ${shown}`);
      layer.bindTooltip(label, { sticky: true });
      layer.on("click", () => selectArea(feature));
      layer.on("add", () => {
        const path = layer.getElement();
        path.classList.add("area", hidden ? "area-suppressed" : "area-published");
        path.dataset.area = feature.properties.area;
        path.dataset.count = hidden ? "suppressed" : String(cell.count);
        // Each area is a tab stop of its own: its name and count are announced, Enter (or
        // Space) chooses it for the time series.
        path.setAttribute("tabindex", "0");
        path.setAttribute("role", "button");
        path.setAttribute("aria-label",
          `${feature.properties.area_name} (${feature.properties.area}), ${period}: ${shown}. Enter shows its time series.`);
        path.addEventListener("keydown", (event) => {
          if (event.key !== "Enter" && event.key !== " ") return;
          event.preventDefault();
          selectArea(feature);
        });
      });
    },
  }).addTo(map);
  if (features.some((f) => f.geometry)) map.fitBounds(state.areas.getBounds(), { padding: [8, 8] });
  renderLegend(breaks, counts, features.length - counts.length);
  const shown = features.filter((f) => f.geometry).length;
  $("map-summary").textContent = `${shown} areas drawn for ${period}; ${features.length - counts.length} suppressed.`;
}

function selectArea(feature) {
  $("series-area").value = feature.properties.area;
  renderSeries();
  $("series-summary").textContent = `Time series of ${feature.properties.area_name} shown below the map.`;
}

function renderLegend(breaks, counts, suppressed) {
  const legend = $("legend");
  legend.textContent = "";
  const entry = (swatchClass, colour, text, n, key) => {
    const item = element("li");
    item.dataset.legend = key;
    const swatch = element("span", null, `swatch ${swatchClass}`);
    if (colour) swatch.style.background = colour;
    item.append(swatch, element("span", `${text}: ${n} areas`));
    item.dataset.areas = String(n);
    legend.append(item);
  };
  entry("", COLOURS[0], "0", counts.filter((c) => c === 0).length, "zero");
  let lower = Math.min(...counts.filter((c) => c > 0));
  breaks.forEach((upper, i) => {
    const colour = COLOURS[1 + i + (4 - breaks.length)];
    const n = counts.filter((c) => c >= lower && c <= upper).length;
    entry("", colour, lower === upper ? `${upper}` : `${lower}–${upper}`, n, `class-${i}`);
    lower = upper + 1;
  });
  entry("hatched", null, "suppressed (hatched; not zero)", suppressed, "suppressed");
}

function renderDisclosure(disclosure) {
  const list = $("disclosure");
  list.textContent = "";
  const rule = state.answer.rule || {};
  const figures = { ...disclosure, threshold: rule.threshold, release: state.answer.release_id };
  for (const [name, value] of Object.entries(figures)) {
    if (value === undefined || value === null || typeof value === "object") continue;
    const term = element("dt", name.replaceAll("_", " "));
    const detail = element("dd", value);
    detail.dataset.key = name;
    list.append(term, detail);
  }
}

function renderTable() {
  const body = $("cells").querySelector("tbody");
  body.textContent = "";
  const rows = document.createDocumentFragment();
  for (const feature of state.answer.features) {
    for (const cell of feature.properties.cells) {
      const row = element("tr");
      const hidden = isSuppressed(cell);
      row.append(element("td", feature.properties.area), element("td", feature.properties.area_name),
        element("td", cell.period + (cell.category ? ` · ${cell.category}` : "")),
        element("td", hidden ? "suppressed" : cell.count, hidden ? "number suppressed-text" : "number"));
      rows.append(row);
    }
  }
  body.append(rows);
}

function renderSeries() {
  const holder = $("series");
  holder.textContent = "";
  if (!state.answer) return;
  const feature = state.answer.features.find((f) => f.properties.area === $("series-area").value);
  if (!feature) return;
  const cells = state.periods.map((p) => cellOf(feature, p));
  const top = Math.max(1, ...cells.map((c) => (c && c.count) || 0));
  const width = Math.max(240, 60 * cells.length);
  const height = 160;
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", String(width));
  svg.setAttribute("role", "img");
  const title = document.createElementNS(SVG_NS, "title");
  title.textContent = `Counts by period for ${feature.properties.area_name}: ` +
    cells.map((c, i) => `${state.periods[i]} ${isSuppressed(c) ? "suppressed" : c.count}`).join(", ");
  svg.append(title);
  const defs = document.createElementNS(SVG_NS, "defs");
  defs.append(hatchPattern("series-hatch"));
  svg.append(defs);
  const slot = width / cells.length;
  cells.forEach((cell, i) => {
    const hidden = isSuppressed(cell);
    const value = hidden ? top : cell.count;
    const barHeight = ((height - 40) * value) / top;
    const bar = document.createElementNS(SVG_NS, "rect");
    bar.setAttribute("x", String(i * slot + slot * 0.2));
    bar.setAttribute("width", String(slot * 0.6));
    bar.setAttribute("y", String(height - 20 - barHeight));
    bar.setAttribute("height", String(Math.max(barHeight, 1)));
    bar.setAttribute("class", hidden ? "bar-suppressed" : "bar");
    const label = document.createElementNS(SVG_NS, "text");
    label.setAttribute("x", String(i * slot + slot / 2));
    label.setAttribute("y", String(height - 24 - barHeight));
    label.setAttribute("text-anchor", "middle");
    label.textContent = hidden ? "suppressed" : String(cell.count);
    const axis = document.createElementNS(SVG_NS, "text");
    axis.setAttribute("x", String(i * slot + slot / 2));
    axis.setAttribute("y", String(height - 5));
    axis.setAttribute("text-anchor", "middle");
    axis.textContent = state.periods[i];
    svg.append(bar, label, axis);
  });
  holder.append(svg);
}

// ------------------------------------------------------------------ points, downloads, report

async function showPoints() {
  const dataset = $("dataset").value;
  const answer = await json(`/v1/datasets/${encodeURIComponent(dataset)}/records`, { format: "geojson", limit: 1000 });
  const map = ensureMap();
  if (state.points) state.points.remove();
  const located = answer.features.filter((f) => f.geometry);
  state.points = L.layerGroup(located.map((f) => L.circleMarker(
    [f.geometry.coordinates[1], f.geometry.coordinates[0]],
    { radius: 4, color: "#7a2e00", weight: 1, fillColor: "#e66100", fillOpacity: 0.9, className: "record-point" },
  ))).addTo(map);
  const disclosure = answer.disclosure || {};
  const k = disclosure.k_min ?? disclosure.k ?? (disclosure.snap && disclosure.snap.k);
  $("points-status").textContent = `${located.length} published points of ${answer.features.length} records` +
    (k !== undefined && k !== null ? `; each point stands for at least k = ${k} households.` : ".");
  $("points-status").dataset.k = k === undefined || k === null ? "" : String(k);
}

async function download(format) {
  const dataset = $("dataset").value;
  const accept = format === "csv" ? "text/csv" : "application/geo+json";
  const response = await api(`/v1/datasets/${encodeURIComponent(dataset)}/aggregates`, { ...query(), format }, accept);
  save(await response.blob(), `${dataset}-${$("layer").value}-${$("period").value}.${format}`);
}

function save(blob, name) {
  const link = element("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

function reportTable(caption, columns, rows) {
  const table = element("table");
  table.append(element("caption", caption));
  const head = element("tr");
  for (const [label] of columns) {
    const th = element("th", label);
    th.scope = "col";
    head.append(th);
  }
  const thead = element("thead");
  thead.append(head);
  const tbody = element("tbody");
  for (const row of rows) {
    const line = element("tr");
    for (const [, value] of columns) line.append(element("td", value(row)));
    tbody.append(line);
  }
  if (!rows.length) {
    const line = element("tr");
    const cell = element("td", "None.");
    cell.colSpan = columns.length;
    line.append(cell);
    tbody.append(line);
  }
  table.append(thead, tbody);
  const wrap = element("div", null, "table-wrap report-table");
  wrap.tabIndex = 0;
  wrap.setAttribute("role", "region");
  wrap.setAttribute("aria-label", caption);
  wrap.append(table);
  return wrap;
}

const percent = (share) => (share === null || share === undefined ? "–" : `${(share * 100).toFixed(1)} %`);

async function showReport() {
  const body = await json("/v1/reports/partnership", { quarter: $("quarter").value });
  const holder = $("report");
  holder.textContent = "";
  holder.append(
    reportTable(`What each provider shared, ${body.quarter} (due ${body.due})`, [
      ["provider", (r) => r.provider], ["dataset", (r) => r.dataset], ["records", (r) => r.records],
      ["last received", (r) => r.received_last || "–"],
      ["on time", (r) => (r.on_time === null ? "–" : r.on_time ? "yes" : "late")],
      ["required complete", (r) => percent(r.completeness.required)],
      ["geocoded", (r) => percent(r.geocoded)], ["rejected rows", (r) => r.rejected],
    ], body.rows),
    reportTable("Agreements", [
      ["id", (a) => a.id], ["title", (a) => a.title], ["status", (a) => a.status],
      ["review by", (a) => a.review_by || "–"], ["review state", (a) => a.review_state],
    ], body.agreements),
    reportTable("Maturity of each partnership (0–4)", [
      ["provider", (m) => m.provider], ["recipient", (m) => m.recipient],
      ["level", (m) => m.level], ["meaning", (m) => m.label], ["next step", (m) => m.next || "–"],
    ], body.maturity),
  );
  const due = $("review-due");
  due.textContent = "";
  const byId = Object.fromEntries(body.agreements.map((a) => [a.id, a]));
  for (const id of body.review_due) {
    const a = byId[id] || { title: id, review_by: "?" };
    due.append(element("li", `${a.title} (${id}): review by ${a.review_by}, ${a.review_state}`));
  }
  if (!body.review_due.length) due.append(element("li", "None due by the end of the following quarter."));
}

// ------------------------------------------------------------------ the cohort profile

const NEEDS = ["accommodation", "education_training_employability", "finance", "relationships",
  "lifestyle", "drug_misuse", "alcohol_misuse", "emotional_wellbeing", "thinking_behaviour", "attitudes"];

function cohortPart(key, title) {
  const part = element("div", null, "part");
  part.dataset.part = key;
  part.append(element("h3", title));
  $("cohort").append(part);
  return part;
}

function partProblem(part, error) {
  const box = element("p", null, "part-problem");
  box.append(element("span", error.message, "detail"));
  if (error.rule) box.append(element("span", ` Rule: ${error.rule}.`, "rule"));
  part.append(box);
}

function cohortTable(part, caption, columns, cells, answer) {
  const perturbation = answer.rule && answer.rule.perturbation;
  if (perturbation) {
    const note = element("p", `Counts are perturbed (${perturbation.method}): each published count may be off by at most ${perturbation.max}.`, "perturbation");
    note.dataset.perturbation = String(perturbation.max);
    part.append(note);
  }
  const shown = cells.map((cell) => ({ ...cell, shown: isSuppressed(cell) ? "suppressed" : String(cell.count) }));
  const table = reportTable(caption, [...columns, ["count", (c) => c.shown]], shown);
  table.querySelectorAll("tbody tr").forEach((row, i) => {
    if (!shown[i]) return;
    row.dataset.count = shown[i].shown;
    row.lastChild.className = isSuppressed(shown[i]) ? "number suppressed-text" : "number";
  });
  part.append(table);
}

async function cohortQuery(dataset, params) {
  return json(`/v1/datasets/${encodeURIComponent(dataset)}/aggregates`, { cohort: $("strand").value.trim(), ...params });
}

async function showCohort() {
  $("cohort").textContent = "";
  const range = { from: $("cohort-from").value, to: $("cohort-to").value };
  const strand = $("strand").value.trim();
  const parts = [
    ["size", `${strand} cohort size per quarter (people)`, "offender-cohort",
      { count: "people", period: "quarter", ...range }, []],
    ["reoffending", "Offences per month relative to joining (the re-offending measure)", "offender-offence",
      { relative: "joined", period: "month" }, []],
    ["substance", "Members in drug treatment per quarter, by substance (people)", "drug-treatment",
      { count: "people", period: "quarter", by: "substance", ...range }, [["substance", (c) => c.substance]]],
  ];
  for (const [key, title, dataset, params, extra] of parts) {
    let answer;
    try {
      answer = await cohortQuery(dataset, params);
    } catch (error) {
      if (key === "size" && error.status === 404) throw error;  // no such strand: nothing to show
      partProblem(cohortPart(key, title), error);
      continue;
    }
    const part = cohortPart(key, title);
    if ((answer.providers_left_out || []).length) {
      part.append(element("p", `Left out (no grant): ${answer.providers_left_out.join(", ")}.`, "hint"));
    }
    cohortTable(part, title, [["period", (c) => c.period], ...extra], answer.cells, answer);
  }
  const needs = cohortPart("needs", "Members by OASys need level per year (people)");
  const rows = [];
  let last = null;
  try {
    for (const need of NEEDS) {
      last = await cohortQuery("oasys-assessment", { count: "people", period: "year", by: need, ...range });
      rows.push(...last.cells.map((c) => ({ ...c, need: need.replaceAll("_", " "), level: c[need] })));
    }
  } catch (error) {
    partProblem(needs, error);
    return;
  }
  cohortTable(needs, "Members by OASys need level per year (people)",
    [["need", (c) => c.need], ["level (0 none, 1 some, 2 significant)", (c) => c.level], ["period", (c) => c.period]],
    rows, last || {});
}

async function downloadReport(format) {
  const accept = format === "csv" ? "text/csv" : "text/html";
  const response = await api("/v1/reports/partnership", { quarter: $("quarter").value, format }, accept);
  save(await response.blob(), `partnership-${$("quarter").value}.${format}`);
}

// ------------------------------------------------------------------ wiring

function wire() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_SLOT, $("key").value.trim());
    $("key").value = "";
    guarded(signIn);
  });
  $("logout").addEventListener("click", signOut);
  $("query").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(draw);
  });
  $("map-period").addEventListener("change", () => guarded(async () => renderAreas()));
  $("series-area").addEventListener("change", renderSeries);
  $("points").addEventListener("click", () => guarded(showPoints));
  $("download-csv").addEventListener("click", () => guarded(() => download("csv")));
  $("download-geojson").addEventListener("click", () => guarded(() => download("geojson")));
  $("report-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(showReport);
  });
  $("cohort-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(showCohort);
  });
  $("download-report").addEventListener("click", () => guarded(() => downloadReport("csv")));
  $("download-report-html").addEventListener("click", () => guarded(() => downloadReport("html")));
  if (sessionStorage.getItem(KEY_SLOT)) guarded(signIn);
}

window.cspPage = state;
wire();

// The operations page: one call to /v1/ops/overview every 30 s, drawn as plain SVG and
// tables. Same origin; the API key box and calls come from common.js (the key stays in this
// tab only, shared with the review page through sessionStorage).
"use strict";

const REFRESH_MS = 30000;
const SVG = "http://www.w3.org/2000/svg";
const BANDS = ["real", "uncertain", "ai"]; // stacked bottom to top
const CHART = { width: 600, height: 250, left: 44, right: 10, top: 10, bottom: 26 };

// --- small helpers -----------------------------------------------------------------------

function svg(tag, attributes, parent) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  if (parent) parent.append(element);
  return element;
}

function element(tag, text, className, parent) {
  const made = document.createElement(tag);
  if (text !== undefined && text !== null) made.textContent = text;
  if (className) made.className = className;
  if (parent) parent.append(made);
  return made;
}

const percent = (value) => (100 * value).toFixed(1) + " %";
const utc = (iso) => new Date(iso).toISOString().slice(0, 16).replace("T", " ");
const shortUtc = (iso) => utc(iso).slice(5); // month-day hour:minute, for tables
const modelName = (model) => `${model.name} ${model.version}`;

function empty(container, text) {
  container.replaceChildren(element("p", text, "empty"));
}

function emptyRow(table, text) {
  const body = table.tBodies[0];
  const cell = element("td", text, "empty");
  cell.colSpan = table.tHead.rows[0].cells.length;
  body.replaceChildren(element("tr"));
  body.rows[0].append(cell);
}

// A time axis over the window: x of a moment, the width of one bucket, ticks and gridlines.
function frame(container, window, yTicks, yLabel) {
  const start = Date.parse(window.start);
  const end = Date.parse(window.end);
  const plotWidth = CHART.width - CHART.left - CHART.right;
  const plotHeight = CHART.height - CHART.top - CHART.bottom;
  const bucketMs = window.bucket === "day" ? 86400000 : 3600000;
  const root = svg("svg", { viewBox: `0 0 ${CHART.width} ${CHART.height}`, role: "img" });
  const axis = {
    root,
    x: (moment) => CHART.left + ((Date.parse(moment) - start) / (end - start)) * plotWidth,
    y: (fraction) => CHART.top + (1 - fraction) * plotHeight,
    bucketWidth: (bucketMs / (end - start)) * plotWidth,
    bucketMs,
  };
  for (const tick of yTicks) {
    const y = axis.y(tick);
    svg("line", { x1: CHART.left, x2: CHART.width - CHART.right, y1: y, y2: y, class: "grid-line" }, root);
    svg("text", { x: CHART.left - 6, y: y + 4, class: "tick y-tick" }, root).textContent = yLabel(tick);
  }
  // Ticks on round times: every N buckets counted from the epoch (a UTC midnight).
  const buckets = Math.round((end - start) / bucketMs);
  const steps = window.bucket === "day" ? [1, 2, 7, 14, 28, 56] : [1, 2, 3, 6, 12, 24, 48, 72, 168];
  const every = steps.find((step) => buckets / step <= 9) || steps[steps.length - 1];
  for (let i = 0; i < buckets; i += 1) {
    const at = start + i * bucketMs;
    if (Math.round(at / bucketMs) % every !== 0) continue;
    const moment = new Date(at).toISOString();
    const x = axis.x(moment);
    svg("line", { x1: x, x2: x, y1: CHART.top, y2: CHART.height - CHART.bottom, class: "grid-line" }, root);
    const midnight = moment.slice(11, 16) === "00:00";
    const label = midnight ? moment.slice(5, 10) : moment.slice(11, 16);
    svg("text", { x: x, y: CHART.height - 8, class: "tick x-tick" }, root).textContent = label;
  }
  container.replaceChildren(root);
  return axis;
}

// --- the charts --------------------------------------------------------------------------

function drawAccuracy(series, window) {
  const summary = $("accuracy-summary");
  const chart = $("accuracy-chart");
  summary.replaceChildren();
  if (!series.length) {
    empty(chart, "no reviewed predictions yet in this range");
    return;
  }
  const axis = frame(chart, window, [0, 0.25, 0.5, 0.75, 1], (tick) => `${100 * tick} %`);
  series.forEach((line, index) => {
    const className = `series s${index % 6}`;
    const item = element("li", null, "accuracy-item", summary);
    element("span", null, `swatch ${className}`, item);
    element("span", modelName(line.model) + ": ", null, item);
    element("strong", percent(line.accuracy), "accuracy-value", item);
    element("span", ` of ${line.reviewed} reviewed`, "muted", item);
    const centre = (point) => axis.x(point.start) + axis.bucketWidth / 2;
    const path = line.points.map((p, i) => `${i ? "L" : "M"}${centre(p).toFixed(1)},${axis.y(p.accuracy).toFixed(1)}`);
    svg("path", { d: path.join(" "), class: `${className} accuracy-line` }, axis.root);
    for (const point of line.points) {
      const dot = svg("circle", { cx: centre(point), cy: axis.y(point.accuracy), r: 3.5, class: `${className} accuracy-point` }, axis.root);
      svg("title", {}, dot).textContent =
        `${modelName(line.model)}, ${utc(point.start)} UTC: ${percent(point.accuracy)} of ${point.reviewed} reviewed`;
    }
  });
}

function describeBucket(bucket) {
  const bands = BANDS.slice().reverse().map((band) => `${band} ${bucket.bands[band] || 0}`).join(", ");
  const reasons = Object.entries(bucket.reason_shares).map(([reason, share]) => `${reason} ${percent(share)}`);
  return `${utc(bucket.start)} UTC: ${bucket.total} answers (${bands})` +
    (reasons.length ? `; reasons: ${reasons.join(", ")}` : "");
}

function drawBands(buckets, window) {
  const chart = $("bands-chart");
  const summary = $("bands-summary");
  if (!buckets.length) {
    empty(chart, "no answers yet in this range");
    summary.textContent = "";
    return;
  }
  const axis = frame(chart, window, [0, 0.5, 1], (tick) => `${100 * tick} %`);
  const width = Math.max(1, axis.bucketWidth * 0.8);
  const totals = { all: 0, bands: {}, reasons: {} };
  for (const bucket of buckets) {
    const bar = svg("g", { class: "bar" }, axis.root);
    svg("title", {}, bar).textContent = describeBucket(bucket);
    const x = axis.x(bucket.start) + axis.bucketWidth * 0.1;
    let below = 0;
    for (const band of BANDS) {
      const share = (bucket.bands[band] || 0) / bucket.total;
      if (share > 0) {
        const top = axis.y(below + share);
        svg("rect", { x, y: top, width, height: axis.y(below) - top, class: `band-${band}` }, bar);
      }
      below += share;
      totals.bands[band] = (totals.bands[band] || 0) + (bucket.bands[band] || 0);
    }
    totals.all += bucket.total;
    for (const [reason, count] of Object.entries(bucket.reasons)) {
      totals.reasons[reason] = (totals.reasons[reason] || 0) + count;
    }
  }
  const bands = BANDS.slice().reverse().map((band) => `${band} ${percent(totals.bands[band] / totals.all)}`);
  const reasons = Object.entries(totals.reasons).map(([reason, count]) => `${reason} ${percent(count / totals.all)}`);
  summary.textContent = `${totals.all} answers in this range: ${bands.join(", ")}` +
    (reasons.length ? `. Uncertain because: ${reasons.join(", ")} of answers.` : ".");
}

// --- drift, serving, alerts ---------------------------------------------------------------

function severityBadge(severity) {
  return element("span", severity, `severity sev-${severity}`);
}

function drawDrift(drift) {
  const table = $("drift-status");
  if (!drift.latest.length) {
    emptyRow(table, "no drift report yet");
    $("drift-history").replaceChildren();
    return;
  }
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const entry of drift.latest) {
    const row = body.insertRow();
    const model = row.insertCell();
    model.textContent = modelName(entry.model);
    model.className = "nowrap";
    row.insertCell().textContent = entry.window;
    row.insertCell().append(severityBadge(entry.severity));
    const skipped = entry.report && entry.report.skipped;
    row.insertCell().textContent = skipped ? `not tested: ${skipped}` : (entry.drift ? "yes" : "no");
    row.insertCell().textContent = entry.size;
    row.insertCell().textContent = shortUtc(entry.created_at);
  }
  const strips = new Map();
  for (const entry of drift.history.slice().reverse()) { // oldest first
    const key = `${modelName(entry.model)} · ${entry.window}`;
    if (!strips.has(key)) strips.set(key, []);
    strips.get(key).push(entry);
  }
  const history = $("drift-history");
  history.replaceChildren();
  for (const [key, entries] of strips) {
    const strip = element("div", null, "strip", history);
    element("span", key, "strip-label", strip);
    const cells = element("span", null, "strip-cells", strip);
    for (const entry of entries) {
      const cell = element("span", null, `cell sev-${entry.severity}`, cells);
      cell.title = `${utc(entry.created_at)} UTC: ${entry.severity}, ${entry.size} predictions`;
    }
  }
}

function reference(model) {
  if (!model) return "";
  return model.registry_version
    ? `${model.registry_version} (follows ${model.reference})`
    : "local bundle, no registry reference";
}

function drawServing(models, rollout) {
  const champion = rollout.champion;
  $("champion").textContent = champion ? modelName(champion) : (models.default || "none loaded");
  $("champion-ref").textContent = reference(champion);
  const challenger = rollout.challenger;
  $("challenger").textContent = challenger ? modelName(challenger) : "none";
  $("challenger-ref").textContent = challenger ? reference(challenger) : "no challenger loaded";
  $("canary").textContent = percent(rollout.canary.weight);
  const stats = rollout.challenger_stats;
  $("canary-note").textContent = rollout.canary.tripped
    ? `stopped by the guard: ${rollout.canary.tripped}`
    : challenger
      ? `${stats.requests} challenger answers, ${percent(stats.error_rate)} errors, p95 ${stats.p95_ms.toFixed(0)} ms`
      : "no challenger to route to";
  $("canary-note").classList.toggle("error", Boolean(rollout.canary.tripped));
  $("shadow").textContent = percent(rollout.shadow.fraction);
  $("shadow-note").textContent = challenger
    ? `${rollout.shadow.mirrored} mirrored, ${rollout.shadow.dropped} dropped, ` +
      `disagreement ${percent(stats.disagreement)}`
    : "no challenger to mirror to";
}

function drawAlerts(alerts) {
  const table = $("alerts");
  if (!alerts.length) {
    emptyRow(table, "no alerts recorded");
    return;
  }
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const alert of alerts) {
    const row = body.insertRow();
    row.insertCell().textContent = shortUtc(alert.received_at);
    row.insertCell().textContent = alert.name;
    row.insertCell().textContent = alert.status;
    row.insertCell().append(severityBadge(alert.severity));
    row.insertCell().textContent = alert.summary || "";
  }
}

const maybePercent = (value) => (value === null || value === undefined ? "–" : percent(value));

function drawLoop(loop) {
  if (!loop) return;
  $("loop-unfamiliar").textContent = maybePercent(loop.unfamiliar_share);
  $("loop-unfamiliar-note").textContent =
    loop.unfamiliar_share_latest === null
      ? "no answers in this range"
      : `of the range's answers; ${percent(loop.unfamiliar_share_latest)} in the latest bucket`;
  $("loop-caught").textContent = maybePercent(loop.reviewed_kind_share);
  $("loop-caught-note").textContent =
    loop.reviewed_kind_share_latest === null || loop.reviewed_kind_share_latest === undefined
      ? "no answers in this range"
      : `answered ai because the photo is of the kind reviewed feedback taught; ` +
        `${percent(loop.reviewed_kind_share_latest)} in the latest bucket`;
  const waiting = loop.waiting;
  $("loop-waiting").textContent = String(waiting.uncertain ?? 0);
  $("loop-waiting-note").textContent =
    `uncertain answers; also ${waiting.disagreement ?? 0} disagreements, ${waiting.sample ?? 0} sampled`;
  const ready = loop.next_retrain;
  $("loop-ready").textContent = `${ready.photos} photos`;
  $("loop-ready-note").textContent =
    `reviewed in the last ${ready.window_days} days, ${ready.from_uncertain} of them answered ` +
    `uncertain; ${ready.without_image} reviewed without a kept upload (unused)`;
  const table = $("loop-models");
  const rows = loop.models.flatMap((entry) =>
    entry.feedback.length
      ? entry.feedback.map((figures) => [entry, figures])
      : [[entry, null]],
  );
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const [entry, figures] of rows) {
    const row = body.insertRow();
    row.insertCell().textContent = modelName(entry.model);
    row.insertCell().textContent = entry.role;
    if (!figures) {
      const cell = row.insertCell();
      cell.colSpan = 6;
      cell.className = "empty";
      cell.textContent = "trained without reviewed feedback";
      continue;
    }
    row.insertCell().textContent = figures.source;
    row.insertCell().textContent = String(figures.count);
    row.insertCell().textContent = figures.roc_auc === null ? "–" : figures.roc_auc.toFixed(3);
    row.insertCell().textContent = maybePercent(figures.ai_band_tpr);
    row.insertCell().textContent = maybePercent(figures.ai_band_fpr);
    row.insertCell().textContent = maybePercent(figures.uncertain_share);
  }
}

// --- refresh -----------------------------------------------------------------------------

let busy = false;

async function refresh() {
  if (busy) return;
  busy = true;
  const [days, bucket] = $("range").value.split(":");
  try {
    const view = await call(`/v1/ops/overview?days=${days}&bucket=${bucket}`, {
      headers: headers(),
    });
    drawServing(view.models, view.rollout);
    drawAccuracy(view.accuracy, view.window);
    drawBands(view.bands, view.window);
    drawDrift(view.drift);
    drawAlerts(view.alerts);
    drawLoop(view.loop);
    say($("status"), `updated ${utc(view.generated_at)} UTC; refreshes every ${REFRESH_MS / 1000} s`);
  } catch (error) {
    say($("status"), error.message, true);
  } finally {
    busy = false;
  }
}

keyInput.addEventListener("change", () => {
  sessionStorage.setItem("apd-api-key", keyInput.value);
  refresh();
});
$("range").addEventListener("change", refresh);
$("refresh").addEventListener("click", refresh);
refresh();
setInterval(refresh, REFRESH_MS);

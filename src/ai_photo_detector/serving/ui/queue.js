// The review queue page: claim the next logged prediction (/v1/review/claim), show its evidence,
// record the verdict by keyboard or button, and score many photos into an exportable table.
// Same origin, no dependencies; the API key stays in this tab only.
"use strict";

const REASONS = {
  low_margin: "the evidence is weak either way",
  unfamiliar: "the photo is unlike anything the model was trained on",
  provenance: "trusted Content Credentials declare generative AI",
  reviewed_kind: "of the kind reviewers taught the model, whose AI band starts lower",
};
const KINDS = {
  uncertain: "uncertain answer",
  disagreement: "shadow model disagreed",
  sample: "quality-control sample",
};

// --- filters and counts ------------------------------------------------------------------------

function filters() {
  const result = {};
  for (const name of ["model", "band", "reason", "kind"]) {
    const value = $("f-" + name).value.trim();
    if (value) result[name] = value;
  }
  if ($("f-since").value) result.since = $("f-since").value + "T00:00:00Z";
  if ($("f-until").value) result.until = $("f-until").value + "T23:59:59Z";
  return result;
}

async function refreshCounts() {
  const query = new URLSearchParams(Object.assign({ limit: "1" }, filters()));
  try {
    const queue = await call("/v1/review/queue?" + query, { headers: headers() });
    const shown = (n) => (n >= queue.count_limit ? `${n}+` : `${n}`);
    const parts = Object.entries(queue.counts).map(
      ([kind, n]) => `${shown(n)} ${KINDS[kind] || kind}`
    );
    say($("counts"), "Waiting: " + parts.join(", "));
  } catch (error) {
    say($("counts"), error.message, true);
  }
}

// --- one item ----------------------------------------------------------------------------------

let current = null;
let leaseTimer = null;
let reviewed = 0;
let busy = false;

async function next() {
  const status = $("status");
  say(status, "claiming the next item…");
  try {
    const claimed = await call("/v1/review/claim", {
      method: "POST", headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(filters()),
    });
    current = claimed.item;
    if (!current) {
      $("item").hidden = true;
      say(status, "Nothing waits for review under these filters.");
    } else {
      say(status, "");
      show(current);
    }
  } catch (error) {
    say(status, error.message, true);
  }
  refreshCounts();
}

function showLease(expiresAt) {
  clearInterval(leaseTimer);
  const end = Date.parse(expiresAt);
  const tick = () => {
    const left = Math.max(0, Math.round((end - Date.now()) / 1000));
    $("lease").textContent = left
      ? `yours for ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`
      : "lease expired: another reviewer may take it (Review next)";
  };
  tick();
  leaseTimer = setInterval(tick, 1000);
}

async function showPicture(item) {
  const photo = $("photo");
  $("overlay-figure").hidden = $("grid-figure").hidden = true;
  if (!item.image_url) {
    photo.hidden = true;
    $("photo-caption").textContent = "The upload was not kept (prediction_log.store_images) or is past retention.";
    return;
  }
  const response = await fetch(item.image_url, { headers: headers() });
  if (!response.ok) {
    photo.hidden = true;
    $("photo-caption").textContent = "The upload is no longer kept.";
    return;
  }
  const blob = await response.blob();
  if (current !== item) return;  // the reviewer has moved on while it loaded
  if (photo.src.startsWith("blob:")) URL.revokeObjectURL(photo.src);
  photo.src = URL.createObjectURL(blob);
  photo.hidden = false;
  $("photo-caption").textContent = `The upload (${item.width}×${item.height} ${item.format})`;
  try {  // re-explained from the retained image by the service; not logged again
    const explained = await call(
      `/v1/review/items/${encodeURIComponent(item.prediction_id)}/explanation`,
      { headers: headers() },
    );
    if (current !== item) return;  // the reviewer has moved on
    $("overlay").src = "data:image/jpeg;base64," + explained.overlay_jpeg;
    drawGrid(explained.grid);
    $("overlay-figure").hidden = $("grid-figure").hidden = false;
  } catch (error) {
    $("photo-caption").textContent += ` (no evidence map: ${error.message})`;
  }
}

function show(item) {
  const label = $("label");
  label.textContent = item.label;
  label.className = "badge " + item.band;
  $("probability").textContent = `${(100 * item.score).toFixed(1)} % AI`;
  $("band").textContent = `band: ${item.band}`;
  $("kind").textContent = KINDS[item.kind] || item.kind;
  $("model").textContent = `${item.model.name} ${item.model.version} · ` +
    `${new Date(item.created_at).toLocaleString()} · ${item.prediction_id}`;
  $("item").dataset.predictionId = item.prediction_id;
  const reasons = $("reasons");
  reasons.hidden = !item.reasons.length;
  reasons.textContent = item.reasons.map((r) => REASONS[r] || r).join("; ");
  const shadow = $("shadow");
  shadow.hidden = !item.shadow;
  if (item.shadow) {
    shadow.textContent = `Shadow ${item.shadow.model.name} ${item.shadow.model.version} said ` +
      `${item.shadow.label} (${(100 * item.shadow.score).toFixed(1)} % AI)`;
  }
  showProvenance($("provenance"), item.provenance);
  showLease(item.lease_expires_at);
  say($("verdict-status"), "");
  $("item").hidden = false;
  // The picture and its evidence map follow; the verdict keys work at once.
  showPicture(item).catch((error) => say($("status"), error.message, true));
}

async function verdict(label) {
  if (!current || busy) return;
  busy = true;
  const status = $("verdict-status");
  say(status, "saving…");
  try {
    const saved = await call(`/v1/review/items/${encodeURIComponent(current.prediction_id)}/verdict`, {
      method: "POST", headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ label: label }),
    });
    reviewed += saved.recorded ? 1 : 0;
    $("done").textContent = String(reviewed);
    say(status, saved.recorded ? `recorded: ${saved.label}` : "skipped");
    await next();
  } catch (error) {
    say(status, error.message, true);
  } finally {
    busy = false;
  }
}

for (const id of ["verdict-ai", "verdict-real", "verdict-skip"]) {
  $(id).addEventListener("click", (event) => verdict(event.currentTarget.dataset.label));
}
document.addEventListener("keydown", (event) => {
  const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
  if (typing || event.ctrlKey || event.metaKey || event.altKey || $("item").hidden) return;
  const label = { a: "ai", r: "real", s: "skip" }[event.key.toLowerCase()];
  if (label) {
    event.preventDefault();
    verdict(label);
  }
});
$("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  if (current) {  // a new filter: give the held item back first
    const held = current;
    current = null;
    call(`/v1/review/items/${encodeURIComponent(held.prediction_id)}/release`, {
      method: "POST", headers: headers(),
    }).catch(() => null).finally(next);
  } else {
    next();
  }
});
refreshCounts();

// --- many photos at once -----------------------------------------------------------------------

const rows = [];
const COLUMNS = ["file", "label", "band", "probability", "reasons", "provenance", "prediction_id"];

function provenanceText(provenance) {
  if (!provenance) return "";
  const c2pa = provenance.c2pa && provenance.c2pa.present
    ? `C2PA ${provenance.c2pa.tampered ? "tampered" : provenance.c2pa.validation}` : "";
  return [provenance.generator, provenance.digital_source_type, c2pa].filter(Boolean).join("; ");
}

function addRow(row) {
  rows.push(row);
  const tr = $("batch-table").tBodies[0].insertRow();
  for (const column of COLUMNS) {
    const value = row[column];
    tr.insertCell().textContent = column === "probability" && typeof value === "number"
      ? value.toFixed(3) : (value ?? "");
  }
  $("batch-table").hidden = false;
  $("export").disabled = false;
}

async function scoreOne(file) {
  try {
    const result = await call("/v1/predict", {
      method: "POST", headers: headers({ "Content-Type": file.type || "application/octet-stream" }),
      body: file,
    });
    addRow({
      file: file.name, label: result.label, band: result.band, probability: result.probability,
      reasons: (result.reasons || []).join(" "),
      provenance: provenanceText(result.evidence && result.evidence.provenance),
      prediction_id: result.prediction_id,
    });
  } catch (error) {
    addRow({ file: file.name, label: "error", band: "", probability: "", reasons: error.message });
  }
}

$("batch-files").addEventListener("change", async (event) => {
  const files = Array.from(event.target.files);
  const status = $("batch-status");
  let done = 0;
  const queue = files.slice();
  const worker = async () => {
    while (queue.length) {
      await scoreOne(queue.shift());
      done += 1;
      status.textContent = `${done} of ${files.length} scored`;
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);  // a few requests in flight
});

function csvCell(value) {
  // Text from uploaded files lands here: a leading = + - @ would be a formula in a spreadsheet.
  const raw = String(value ?? "");
  const text = /^[=+\-@]/.test(raw) ? "'" + raw : raw;
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

$("export").addEventListener("click", () => {
  const lines = [COLUMNS.join(",")].concat(rows.map((row) => COLUMNS.map((c) => csvCell(row[c])).join(",")));
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
  link.download = "scores.csv";
  link.click();
});

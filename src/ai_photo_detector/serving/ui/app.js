// The review page: explain one photo through /v1/explain, record the reviewer's verdict
// through /v1/feedback. Same origin, no dependencies; the API key stays in this tab only.
"use strict";

// Why an answer is 'uncertain', in the reviewer's words.
const REASONS = {
  low_margin: "the evidence is weak either way (the probability lies between the bands)",
  unfamiliar: "the photo is unlike anything the model was trained on, so its probability is not to be trusted",
};

// Reasons for an 'ai' answer, not an uncertain one.
const PROVENANCE = "AI because the file's trusted Content Credentials (C2PA) declare generative " +
  "AI; the probability shown is still the model's.";
const REVIEWED_KIND = "AI at this probability because the photo is of the kind reviewers " +
  "taught the model (a retrain on their verdicts), whose AI band starts lower.";

function showReasons(reasons) {
  const element = $("reasons");
  element.hidden = !reasons.length;
  if (reasons.includes("provenance")) {
    element.textContent = PROVENANCE;
    return;
  }
  if (reasons.includes("reviewed_kind")) {
    element.textContent = REVIEWED_KIND;
    return;
  }
  element.textContent = reasons.length
    ? "Uncertain because " + reasons.map((r) => REASONS[r] || r).join("; and ") + "."
    : "";
}

function show(result, file) {
  const explanation = result.explanation;
  const label = $("label");
  label.textContent = result.label;
  label.className = "badge " + result.band;
  $("probability").textContent = `${(100 * result.probability).toFixed(1)} % AI`;
  $("band").textContent = `band: ${result.band}`;
  showReasons(result.reasons || []);
  $("model").textContent = `${result.model.name} ${result.model.version}`;
  $("photo").src = URL.createObjectURL(file);
  $("overlay").src = "data:image/jpeg;base64," + explanation.overlay_jpeg;
  $("target").textContent = explanation.target;
  $("against").textContent = explanation.against;
  $("margin").textContent = explanation.margin.toFixed(2);
  drawGrid(explanation.grid);
  showProvenance($("provenance"), result.evidence ? result.evidence.provenance : null);
  const t = result.timing;
  $("timing").textContent = `preprocess ${t.preprocess_ms.toFixed(1)} ms, inference ` +
    `${t.inference_ms.toFixed(1)} ms; prediction ${result.prediction_id}`;
  const buttons = $("feedback-buttons");
  buttons.replaceChildren();
  for (const choice of Object.keys(result.scores)) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = choice;
    button.dataset.label = choice;
    button.addEventListener("click", () => sendFeedback(result.prediction_id, choice));
    buttons.append(button);
  }
  say($("feedback-status"), "");
  $("result").hidden = false;
}

async function sendFeedback(predictionId, label) {
  const status = $("feedback-status");
  say(status, "saving…");
  try {
    const body = JSON.stringify({ prediction_id: predictionId, label: label, source: "review-ui" });
    const saved = await call("/v1/feedback", {
      method: "POST", headers: headers({ "Content-Type": "application/json" }), body: body,
    });
    say(status, `recorded: ${saved.label} (${saved.label === saved.predicted_label ? "agrees" : "disagrees"} with the model)`);
  } catch (error) {
    say(status, error.message, true);
  }
}

async function explain(file) {
  const status = $("status");
  say(status, `explaining ${file.name}…`);
  $("result").hidden = true;
  try {
    const result = await call("/v1/explain", {
      method: "POST",
      headers: headers({ "Content-Type": file.type || "application/octet-stream" }),
      body: file,
    });
    say(status, "");
    show(result, file);
  } catch (error) {
    say(status, error.message, true);
  }
}

$("file").addEventListener("change", (event) => {
  if (event.target.files.length) explain(event.target.files[0]);
});
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files.length) explain(event.dataTransfer.files[0]);
});

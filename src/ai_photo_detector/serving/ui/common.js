// What every page of the web UI shares: the API key box (kept in this tab only, shared between
// the pages through sessionStorage), JSON calls with the service's error shape, the evidence
// grid and the provenance list. Loaded before each page's own script; no dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");
keyInput.value = sessionStorage.getItem("apd-api-key") || "";
keyInput.addEventListener("change", () => sessionStorage.setItem("apd-api-key", keyInput.value));

function headers(extra) {
  const result = Object.assign({}, extra);
  if (keyInput.value) result["X-API-Key"] = keyInput.value;
  return result;
}

function say(element, text, isError) {
  element.textContent = text;
  element.classList.toggle("error", Boolean(isError));
}

async function call(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = body && body.error ? body.error : { code: "http_" + response.status, message: response.statusText };
    throw new Error(error.code + ": " + error.message);
  }
  return body;
}

function drawGrid(grid) {
  const table = $("grid");
  table.replaceChildren();
  const largest = Math.max(1e-9, ...grid.flat().map(Math.abs));
  for (const row of grid) {
    const tr = table.insertRow();
    for (const value of row) {
      const cell = tr.insertCell();
      const strength = Math.abs(value) / largest;
      cell.textContent = value.toFixed(1);
      cell.style.backgroundColor = value >= 0
        ? `rgba(198, 40, 40, ${strength})` : `rgba(21, 101, 192, ${strength})`;
      cell.style.color = strength > 0.5 ? "#fff" : "#1d1d1f";
    }
  }
}

// The file's own account of its origin (EXIF, XMP, PNG text, C2PA), as term and value pairs.
function showProvenance(list, provenance) {
  list.replaceChildren();
  const add = (term, value) => {
    if (value === null || value === undefined || value === "" || value === false) return;
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = term;
    dd.textContent = value === true ? "yes" : String(value);
    list.append(dt, dd);
  };
  if (!provenance) {
    add("provenance", "the file carried no origin metadata");
    return;
  }
  add("generator", provenance.generator);
  add("source type", provenance.digital_source_type);
  add("software", provenance.software);
  add("camera", provenance.camera);
  if (provenance.text_chunks && provenance.text_chunks.length) {
    add("PNG text", provenance.text_chunks.join(", "));
  }
  const c2pa = provenance.c2pa;
  if (c2pa && c2pa.present) {
    const trust = c2pa.trusted ? "trusted signer" : "signer not in the trust anchors";
    add("C2PA", c2pa.tampered ? "TAMPERED: " + c2pa.failures.join(", ") : `${c2pa.validation}, ${trust}`);
    add("C2PA signer", c2pa.signer);
    add("C2PA declares AI", c2pa.ai_declared);
  } else if (c2pa && c2pa.error) {
    add("C2PA", c2pa.error);
  }
  if (!list.children.length) add("provenance", "the file carried no origin metadata");
}

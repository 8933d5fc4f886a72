"""The drift report: history of drift checks as Markdown or HTML, with plots."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

FAMILIES = ("score", "image_stats", "labels", "embedding")


def _plot(entries: list[dict[str, Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ordered = list(reversed(entries))  # oldest first
    for family in FAMILIES:
        points = [
            (i, e["report"]["detectors"][family]["p_value"])
            for i, e in enumerate(ordered)
            if family in e["report"].get("detectors", {})
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            axes[0].semilogy(xs, [max(y, 1e-12) for y in ys], marker=".", label=family)
    if ordered and ordered[0]["report"].get("family_threshold"):
        axes[0].axhline(ordered[0]["report"]["family_threshold"], color="red", linestyle="--")
    axes[0].set(ylabel="p-value (log)", title="Drift tests per check (red: alarm level)")
    axes[0].legend(loc="lower left", fontsize=8)
    psi = [
        (i, e["report"]["detectors"]["score"]["psi"])
        for i, e in enumerate(ordered)
        if "score" in e["report"].get("detectors", {})
    ]
    if psi:
        xs, ys = zip(*psi, strict=True)
        axes[1].plot(xs, ys, marker=".", color="purple")
    axes[1].set(xlabel="check (oldest to newest)", ylabel="score PSI")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _rows(entries: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for entry in entries:
        detectors = entry["report"].get("detectors", {})
        p_values = [f"{detectors[f]['p_value']:.2g}" if f in detectors else "-" for f in FAMILIES]
        rows.append(
            [
                entry["created_at"][:19],
                f"{entry['model']['name']} {entry['model']['version']}",
                entry["window"],
                str(entry["size"]),
                entry["severity"],
                *p_values,
            ]
        )
    return rows


HEADER = ["time (UTC)", "model", "window", "size", "severity", *[f"p {f}" for f in FAMILIES]]


def write_drift_report(entries: list[dict[str, Any]], out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    drifted = sum(e["drift"] for e in entries)
    summary = f"{len(entries)} checks, {drifted} with drift."
    if out.suffix.lower() == ".md":
        plot = out.with_suffix(".png")
        if entries:
            plot.write_bytes(_plot(entries))
        lines = ["# Drift report", "", summary, ""]
        if entries:
            lines += [f"![drift]({plot.name})", ""]
        lines.append("| " + " | ".join(HEADER) + " |")
        lines.append("|" + "---|" * len(HEADER))
        lines += ["| " + " | ".join(row) + " |" for row in _rows(entries)]
        out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return out
    image = ""
    if entries:
        encoded = base64.b64encode(_plot(entries)).decode()
        image = f'<img alt="drift plot" src="data:image/png;base64,{encoded}">'
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row in _rows(entries)
    )
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    out.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>Drift report</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;border-bottom:1px solid #ddd}"
        "</style></head><body><h1>Drift report</h1>"
        f"<p>{html.escape(summary)}</p>{image}<table><tr>{head}</tr>{cells}</table>"
        "</body></html>\n",
        encoding="utf-8",
    )
    return out

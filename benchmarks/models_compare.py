"""The shipped bundles side by side: in process and over HTTP, on 512x512 photos.

For each bundle (``models/default``, the frozen CLIP encoder with its head; ``models/fast``,
the fine-tuned EfficientNet-Lite0; ``models/fast-int8``, its static INT8 twin) one server runs
(`ai-photo-detector serve`, embedded defaults); rounds alternate the bundles, and within a
round each bundle's graph alone (one preprocessed image per run), its in-process loop (decode +
preprocess + infer, one image at a time, on the session the service gives a lone image) and its
HTTP level (wrk, concurrency 8, 3 s) are measured seconds apart.

Targets (issue 10): each bundle's HTTP throughput at concurrency 8 >= 75 % of its in-process
loop; the default's HTTP throughput >= 30 % of the fast bundle's; and what INT8 buys the fast
bundle, graph alone and end to end (ratios of medians over rounds, each round pairing
measurements taken seconds apart).
Run: .venv/bin/python -m benchmarks.models_compare
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ai_photo_detector.imaging import preprocess_bytes
from ai_photo_detector.model.bundle import load_bundle
from ai_photo_detector.model.inference import make_session
from benchmarks import wrk
from benchmarks.common import print_table, write_csv
from benchmarks.http_load import free_port, in_process_rate, start_server, wait_idle
from benchmarks.photos import sample_photo

if TYPE_CHECKING:
    import onnxruntime as ort

MODELS = Path(__file__).resolve().parents[1] / "models"
BUNDLES = {
    "default": MODELS / "default",
    "fast": MODELS / "fast",
    "fast-int8": MODELS / "fast-int8",
}
ROUNDS = 5
CONCURRENCY = 8
SECONDS = 3


def graph_rate(array: np.ndarray, session: ort.InferenceSession, seconds: float = 2.0) -> float:
    """Images/s of the graph alone, one preprocessed image per run."""
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(["logits"], {"image": array[None]})
        done += 1
    return done / (time.perf_counter() - started)


def main() -> None:
    if not wrk.available():
        raise SystemExit("the load levels use wrk: apt-get install wrk")
    photos = [sample_photo(512, 512, i) for i in range(4)]
    bundles = {name: load_bundle(path) for name, path in BUNDLES.items()}  # all verify first
    servers, sessions = {}, {}
    for name, path in BUNDLES.items():
        bundle = bundles[name]
        sessions[name] = (
            bundle.manifest.preprocessing,
            make_session(bundle.graph(), spinning="during_run"),
        )
        port = free_port()
        servers[name] = (port, start_server(port, {"APD_MODEL": str(path)})[0])
    measured: dict[str, dict[str, list[float]]] = {
        name: {"graph": [], "in_process": [], "http": [], "p50": [], "p95": []} for name in BUNDLES
    }
    try:
        for spec, session in sessions.values():
            in_process_rate(photos, spec, session, seconds=0.3)  # warm-up
        for _ in range(ROUNDS):
            for name, (spec, session) in sessions.items():
                port = servers[name][0]
                wait_idle(port)
                array, _ = preprocess_bytes(photos[0], spec)
                measured[name]["graph"].append(graph_rate(array, session))
                measured[name]["in_process"].append(in_process_rate(photos, spec, session))
                result = wrk.load(port, photos, CONCURRENCY, SECONDS)
                measured[name]["http"].append(result["ok_per_s"])
                measured[name]["p50"].append(result["p50_ms"])
                measured[name]["p95"].append(result["p95_ms"])
    finally:
        for _, process in servers.values():
            process.terminate()
            process.wait(timeout=30)
    rows: list[dict[str, Any]] = []
    fast = measured["fast"]

    def against_fast(values: dict[str, list[float]], level: str) -> float:
        return statistics.median(a / b for a, b in zip(values[level], fast[level], strict=True))

    for name, values in measured.items():
        ratios = [h / b for h, b in zip(values["http"], values["in_process"], strict=True)]
        rows.append(
            {
                "bundle": name,
                "photo": "512x512",
                "concurrency": CONCURRENCY,
                "graph_per_s": statistics.median(values["graph"]),
                "graph_to_fast_graph": against_fast(values, "graph"),
                "in_process_per_s": statistics.median(values["in_process"]),
                "http_per_s": statistics.median(values["http"]),
                "http_to_in_process": statistics.median(ratios),
                "http_to_in_process_min": min(ratios),
                "in_process_to_fast_in_process": against_fast(values, "in_process"),
                "http_to_fast_http": against_fast(values, "http"),
                "p50_ms": statistics.median(values["p50"]),
                "p95_ms": statistics.median(values["p95"]),
            }
        )
    print_table(rows)
    write_csv("models_compare", rows)


if __name__ == "__main__":
    main()

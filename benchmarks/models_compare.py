"""The shipped bundles side by side, and the default against the one it replaced.

Bundles: ``models/default`` (the frozen CLIP encoder, static INT8 on OpenVINO since 2.2.0),
``benchmarks/baselines/default-2.1.0`` (the default before it, pinned: the packaged dynamic INT8
graph on ONNX Runtime, one image at a time), ``models/fast`` (EfficientNet-Lite0 fine-tuned) and
``models/fast-int8`` (its static INT8 twin). One server per bundle (`ai-photo-detector serve`,
embedded defaults); rounds alternate the bundles, and within a round each bundle is measured
seconds apart at four levels:

- graph alone: images/s of its session (the runtime its recipe names, both cores) at batch 1,
  8 and 16; the best batch counts (for the pinned graph, batched runs are numerically wrong,
  which is why it serves one image at a time, but they show what its graph can do);
- in process: decode + preprocess + infer, one image at a time;
- HTTP: wrk at concurrency 8 on 512x512 JPEG photos, and for the two defaults on 3 MP photos.

Targets (issue 23): the default's graph at its best batch >= 1.5x the pinned graph's; its HTTP
level >= 1.5x the pinned default's at 512 px and >= 1.3x at 3 MP; HTTP >= 75 % of its
in-process loop. Start to ready (graph cache warm) and idle memory of each default are reported
beside them. Ratios are medians over rounds of measurements taken seconds apart.
Run: .venv/bin/python -m benchmarks.models_compare
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from ai_photo_detector.imaging import preprocess_bytes
from ai_photo_detector.model.bundle import Bundle, load_bundle
from ai_photo_detector.model.runtimes import GraphSession, open_session
from benchmarks import wrk
from benchmarks.common import print_table, write_csv
from benchmarks.http_load import free_port, in_process_rate, rss_mb, start_server, wait_idle
from benchmarks.photos import sample_photo

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = {
    "default": ROOT / "models" / "default",
    "default-2.1.0": ROOT / "benchmarks" / "baselines" / "default-2.1.0",
    "fast": ROOT / "models" / "fast",
    "fast-int8": ROOT / "models" / "fast-int8",
}
DEFAULTS = ("default", "default-2.1.0")
BATCHES = (1, 8, 16)
ROUNDS = 5
CONCURRENCY = 8
SECONDS = 3


def session_of(bundle: Bundle) -> GraphSession:
    """The session the service runs the bundle's graph on (its recipe's runtime)."""
    session, _ = open_session(bundle.graph(), bundle.manifest.runtime, spinning="during_run")
    return session


def graph_rate(array: np.ndarray, session: GraphSession, batch: int, seconds: float) -> float:
    """Images/s of the graph alone at one batch size."""
    inputs = np.repeat(array[None], batch, axis=0)
    session.run(["logits"], {"image": inputs})
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(["logits"], {"image": inputs})
        done += batch
    return done / (time.perf_counter() - started)


def main() -> None:
    if not wrk.available():
        raise SystemExit("the load levels use wrk: apt-get install wrk")
    photos = [sample_photo(512, 512, i) for i in range(4)]
    large = [sample_photo(2048, 1536, i) for i in range(4)]
    bundles = {name: load_bundle(path) for name, path in BUNDLES.items()}  # all verify first
    sessions = {name: session_of(bundle) for name, bundle in bundles.items()}  # graphs cached
    servers, started = {}, {}
    for name, path in BUNDLES.items():
        port = free_port()
        process, ready_s = start_server(port, {"APD_MODEL": str(path)})
        servers[name] = (port, process)
        started[name] = {"ready_s": ready_s, "idle_rss_mib": rss_mb(process.pid)}
    levels = ["graph", "in_process", "http", "p50", "p95", "http_3mp"]
    measured: dict[str, dict[str, list[float]]] = {
        name: {level: [] for level in levels} for name in BUNDLES
    }
    best_batch: dict[str, list[int]] = {name: [] for name in BUNDLES}
    try:
        for name, session in sessions.items():
            in_process_rate(photos, bundles[name].manifest.preprocessing, session, 0.3)  # warm
        for _ in range(ROUNDS):
            for name, session in sessions.items():
                spec = bundles[name].manifest.preprocessing
                port = servers[name][0]
                wait_idle(port)
                array, _ = preprocess_bytes(photos[0], spec)
                rates = {batch: graph_rate(array, session, batch, 1.5) for batch in BATCHES}
                batch = max(rates, key=lambda b: rates[b])
                best_batch[name].append(batch)
                measured[name]["graph"].append(rates[batch])
                measured[name]["in_process"].append(in_process_rate(photos, spec, session))
                result = wrk.load(port, photos, CONCURRENCY, SECONDS)
                measured[name]["http"].append(result["ok_per_s"])
                measured[name]["p50"].append(result["p50_ms"])
                measured[name]["p95"].append(result["p95_ms"])
                if name in DEFAULTS:
                    wait_idle(port)
                    measured[name]["http_3mp"].append(
                        wrk.load(port, large, CONCURRENCY, SECONDS)["ok_per_s"]
                    )
    finally:
        for _, process in servers.values():
            process.terminate()
            process.wait(timeout=30)

    def against(name: str, other: str, level: str) -> float:
        pairs = zip(measured[name][level], measured[other][level], strict=True)
        return statistics.median(a / b for a, b in pairs)

    rows: list[dict[str, Any]] = []
    for name, values in measured.items():
        ratios = [h / b for h, b in zip(values["http"], values["in_process"], strict=True)]
        row: dict[str, Any] = {
            "bundle": name,
            "graph_per_s": statistics.median(values["graph"]),
            "graph_best_batch": statistics.mode(best_batch[name]),
            "in_process_per_s": statistics.median(values["in_process"]),
            "http_512_per_s": statistics.median(values["http"]),
            "http_to_in_process": statistics.median(ratios),
            "http_to_in_process_min": min(ratios),
            "http_to_fast_http": against(name, "fast", "http"),
            "p50_ms": statistics.median(values["p50"]),
            "p95_ms": statistics.median(values["p95"]),
            "http_3mp_per_s": statistics.median(values["http_3mp"]) if values["http_3mp"] else "",
            **started[name],
        }
        for level in ("graph", "http", "http_3mp"):
            row[f"{level}_to_2.1.0"] = (
                against(name, "default-2.1.0", level) if name == "default" else ""
            )
        rows.append(row)
    print_table(rows)
    write_csv("models_compare", rows)


if __name__ == "__main__":
    main()

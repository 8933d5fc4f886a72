"""Soak: mixed traffic against a real service process for a while, watching its resources.

Concurrency 8: valid photos to /v1/predict, invalid bodies (random bytes, empty, a cut JPEG),
/v1/explain, feedback on answered predictions, and a drift run every 10 s. Every few seconds
the service's resident memory, open files and threads are read from /proc. The result gives
their slope over the second half of the run (the first half is warm-up: caches, pools and
allocator arenas filling), the 99th-percentile latency of /v1/predict per window, and the
answers by status (no 5xx allowed). The test suite runs 60 s; ``make soak`` 30 minutes.

Run: .venv/bin/python -m reliability.soak [--duration-s 1800]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from reliability.faults import FAST_LOG, RESULTS, photos, start_service, stop_service

WEIGHTS = {"predict": 70, "invalid": 10, "explain": 10, "feedback": 10}


def _resources(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
        "threads": int(fields["Threads"]),
        "open_files": len(os.listdir(f"/proc/{pid}/fd")),
    }


def _summary(
    samples: list[dict[str, float]],
    after: dict[str, float],
    second_half: list[dict[str, float]],
    name: str,
) -> dict[str, float]:
    """Idle, peak, end of load, after load, and the slope over the second half (per minute)."""
    slope = _slope_per_minute([s["t"] for s in second_half], [s[name] for s in second_half])
    return {
        "idle": round(samples[0][name], 1),
        "peak": round(max(s[name] for s in samples), 1),
        "end_of_load": round(samples[-1][name], 1),
        "after_load": round(after[name], 1),
        "slope_second_half_per_min": round(slope, 2),
    }


def _slope_per_minute(times: list[float], values: list[float]) -> float:
    if len(times) < 3:
        return float("nan")
    return float(np.polyfit(np.asarray(times) / 60, np.asarray(values), 1)[0])


def soak(
    work: Path,
    duration_s: float = 60,
    concurrency: int = 8,
    sample_s: float = 5,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    env = {
        **(extra_env or {}),
        **FAST_LOG,
        "APD_DATABASE_URL": f"sqlite:///{work / 'store.db'}",
        "APD_MONITORING__ENABLED": "true",
        "APD_MONITORING__MIN_WINDOW": "50",
    }
    service = start_service(env, work / "service.log")
    valid = photos()
    cut = valid[0][: len(valid[0]) // 2]
    statuses: Counter[str] = Counter()
    latencies: list[tuple[float, float]] = []  # (seconds since start, predict latency)
    answered: list[str] = []
    transport_errors: list[dict[str, Any]] = []  # requests the service never answered
    lock = threading.Lock()
    stop = threading.Event()
    started = time.monotonic()

    def send(client: httpx.Client, rng: random.Random, kind: str) -> httpx.Response | None:
        if kind == "predict":
            return client.post("/v1/predict", content=rng.choice(valid))
        if kind == "invalid":
            body = rng.choice([os.urandom(rng.randint(1, 4096)), b"", cut])
            return client.post("/v1/predict", content=body)
        if kind == "explain":
            return client.post("/v1/explain?overlay=true", content=rng.choice(valid))
        with lock:
            target = rng.choice(answered) if answered else None
        if target is None:
            return None
        label = rng.choice(["ai", "real"])
        return client.post("/v1/feedback", json={"prediction_id": target, "label": label})

    def worker(n: int) -> None:
        rng = random.Random(n)
        kinds, weights = zip(*WEIGHTS.items(), strict=True)
        previous = "none"
        with httpx.Client(base_url=service.base, timeout=60) as client:
            while not stop.is_set():
                kind = rng.choices(kinds, weights)[0]
                began = time.monotonic()
                try:
                    response = send(client, rng, kind)
                except httpx.TransportError as exc:  # counted: a client thread never dies
                    with lock:
                        statuses[f"{kind} {type(exc).__name__}"] += 1
                        transport_errors.append(
                            {
                                "t": round(began - started, 1),
                                "kind": kind,
                                "after": previous,  # the request before it on the connection
                                "error": f"{type(exc).__name__}: {exc}",
                            }
                        )
                    previous = "error"
                    continue
                if response is None:
                    continue
                previous = f"{kind} {response.status_code}"
                elapsed = time.monotonic() - began
                with lock:
                    statuses[previous] += 1
                    if kind == "predict" and response.status_code == 200:
                        latencies.append((began - started, elapsed))
                        answered.append(response.json()["prediction_id"])
                        del answered[:-500]

    def drift_runs() -> None:
        with httpx.Client(base_url=service.base, timeout=120) as client:
            while not stop.wait(10):
                response = client.post("/v1/drift/run")
                with lock:
                    statuses[f"drift {response.status_code}"] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
    threads.append(threading.Thread(target=drift_runs))
    samples: list[dict[str, float]] = []
    try:
        samples.append({"t": 0.0, **_resources(service.process.pid)})
        for thread in threads:
            thread.start()
        while time.monotonic() - started < duration_s:
            time.sleep(sample_s)
            samples.append({"t": time.monotonic() - started, **_resources(service.process.pid)})
        stop.set()
        for thread in threads:
            thread.join(120)
        time.sleep(sample_s)
        after = _resources(service.process.pid)
    finally:
        stop.set()
        stop_service(service)
    second_half = [s for s in samples if s["t"] >= duration_s / 2]
    windows = max(1, int(duration_s // 60))  # p99 per minute (one window for short runs)
    p99 = []
    for w in range(windows):
        span = [
            lat
            for t, lat in latencies
            if w * duration_s / windows <= t < (w + 1) * duration_s / windows
        ]
        p99.append(round(1000 * float(np.percentile(span, 99)), 1) if span else None)
    server_errors = sum(v for k, v in statuses.items() if k.split()[1].startswith("5"))
    return {
        "scenario": "soak",
        "duration_s": duration_s,
        "concurrency": concurrency,
        "answers": dict(sorted(statuses.items())),
        "server_errors_5xx": server_errors,
        "transport_errors": transport_errors,
        # What the service said about its failures: the log is in a temporary folder.
        "service_log_tail": service.log.read_text(errors="replace")[-4000:]
        if server_errors or transport_errors
        else "",
        "predict_p99_ms_per_window": p99,
        "rss_mib": _summary(samples, after, second_half, "rss_mib"),
        "open_files": _summary(samples, after, second_half, "open_files"),
        "threads": _summary(samples, after, second_half, "threads"),
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=1800)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = soak(Path(tmp), args.duration_s, args.concurrency)
    result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

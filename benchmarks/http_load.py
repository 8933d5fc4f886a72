"""HTTP load on loopback: throughput and latency percentiles against the in-process loop.

Starts `ai-photo-detector serve` with the shipped model as a subprocess, measures start-to-ready
time and resident memory, then drives it with wrk (closed loop, N connections) at concurrency
1, 8 and 32 using 1024x1024 and 3 MP JPEG photos. The baseline, measured in the same run, is the
in-process decode + preprocess + infer loop on the same images. A last phase overloads a server
with a tiny queue, with an aiohttp client that times refusals apart from answers, to show that
refusals are fast 503s rather than growing latency.

Target: HTTP throughput >= 75% of the in-process loop; start to ready <= 3 s.
Run: .venv/bin/python -m benchmarks.http_load
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np
import onnxruntime as ort

from ai_photo_detector.imaging import PreprocessSpec, preprocess_bytes
from ai_photo_detector.model.bundle import load_bundle
from ai_photo_detector.model.runtimes import make_session
from ai_photo_detector.settings import Settings
from benchmarks import wrk
from benchmarks.common import print_table, write_csv
from benchmarks.photos import sample_photo

LEVEL_SECONDS = 3
ROUNDS = 7
CONCURRENCY = (1, 8, 32)
SIZES = {"1024x1024": (1024, 1024), "3MP": (2048, 1536)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    port: int, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], float]:
    env = {**os.environ, "APD_SERVER__PORT": str(port), "APD_RATE_LIMIT__ENABLED": "false"}
    env.update(extra_env or {})
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "ai_photo_detector.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = started + 60
    while time.perf_counter() < deadline:
        try:
            if (
                httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=0.5).status_code
                == 200
            ):
                return process, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    process.kill()
    raise RuntimeError("the server did not become ready within 60 s")


def wait_idle(port: int, timeout: float = 30.0) -> None:
    """Until the server has finished the previous level's requests (wrk stops sending at its
    deadline, but the server still answers what it admitted): each level starts idle."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        in_flight = [
            float(line.split()[1])
            for line in metrics.splitlines()
            if line.startswith("apd_http_requests_in_flight ")
        ]
        if in_flight and in_flight[0] <= 1:  # the scrape itself
            return
        time.sleep(0.05)
    raise RuntimeError("the server did not become idle")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def in_process_rate(
    photos: list[bytes], spec: PreprocessSpec, session: ort.InferenceSession, seconds: float = 2.0
) -> float:
    """Images/s of the plain loop: decode + preprocess + infer, one image at a time."""
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        array, _ = preprocess_bytes(photos[done % len(photos)], spec)
        session.run(["logits", "embedding"], {"image": array[None]})
        done += 1
    return done / (time.perf_counter() - started)


def baseline_rate(photos: list[bytes]) -> float:
    """The faster of ONNX Runtime's own defaults (threads pinned to cores) and the session the
    service gives a lone image: never flatter the service with a handicapped baseline."""
    bundle = load_bundle(Settings().model)
    spec, model = bundle.manifest.preprocessing, bundle.graph()
    sessions = [
        ort.InferenceSession(model, providers=["CPUExecutionProvider"]),
        make_session(model, spinning="during_run"),
    ]
    for session in sessions:
        in_process_rate(photos, spec, session, seconds=0.2)  # warm-up
    return max(in_process_rate(photos, spec, session) for session in sessions)


async def drive(port: int, photos: list[bytes], concurrency: int, total: int) -> dict[str, Any]:
    """Closed-loop load that times 503 refusals apart from answers (the overload phase)."""
    latencies: list[float] = []
    refusals: list[float] = []
    statuses: dict[int, int] = {}
    # aiohttp, not httpx: the client shares the server's 2 cores and aiohttp spends less CPU.
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        f"http://127.0.0.1:{port}", connector=connector, timeout=timeout
    ) as client:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(i)

        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                sent = time.perf_counter()
                async with client.post(
                    "/v1/predict",
                    data=photos[i % len(photos)],
                    headers={"content-type": "image/jpeg"},
                ) as response:
                    await response.read()
                (refusals if response.status == 503 else latencies).append(
                    time.perf_counter() - sent
                )
                statuses[response.status] = statuses.get(response.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    ok = statuses.get(200, 0)
    return {
        "ok_per_s": ok / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "p50_503_ms": float(np.percentile(refusals, 50) * 1000) if refusals else float("nan"),
        "p99_503_ms": float(np.percentile(refusals, 99) * 1000) if refusals else float("nan"),
        "status_counts": " ".join(f"{k}:{v}" for k, v in sorted(statuses.items())),
    }


def main() -> None:
    if not wrk.available():
        raise SystemExit("the load levels use wrk: apt-get install wrk")
    rows: list[dict[str, Any]] = []
    port = free_port()
    process, ready_s = start_server(port)
    try:
        for size_name, (width, height) in SIZES.items():
            photos = [sample_photo(width, height, i) for i in range(4)]
            # Rounds alternate baseline and load levels, so the machine's noise hits all alike;
            # each level reports its median round.
            baselines: list[float] = []
            rounds: dict[int, list[dict[str, Any]]] = {c: [] for c in CONCURRENCY}
            for _ in range(ROUNDS):
                wait_idle(port)
                baselines.append(baseline_rate(photos))
                for concurrency in CONCURRENCY:
                    wait_idle(port)
                    rounds[concurrency].append(wrk.load(port, photos, concurrency, LEVEL_SECONDS))
            baseline = statistics.median(baselines)
            for concurrency, results in rounds.items():
                result = sorted(results, key=lambda r: r["ok_per_s"])[len(results) // 2]
                # Each round's level against that round's baseline, seconds apart: the
                # machine's speed drifts from minute to minute, so paired ratios are steadier.
                ratios = [r["ok_per_s"] / b for r, b in zip(results, baselines, strict=True)]
                rows.append(
                    {
                        "phase": "load",
                        "photo": size_name,
                        "concurrency": concurrency,
                        "in_process_per_s": baseline,
                        **result,
                        "ratio_to_in_process": statistics.median(ratios),
                        "ratio_min": min(ratios),
                        "ratio_max": max(ratios),
                    }
                )
        memory = rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    overload_port = free_port()
    small_queue = {"APD_SERVER__MAX_QUEUE_SIZE": "4", "APD_SERVER__MAX_BATCH_SIZE": "4"}
    process, _ = start_server(overload_port, small_queue)
    try:
        photos = [sample_photo(1024, 1024, i) for i in range(4)]
        result = asyncio.run(drive(overload_port, photos, 64, 256))
        rows.append(
            {
                "phase": "overload (queue 4)",
                "photo": "1024x1024",
                "concurrency": 64,
                "in_process_per_s": float("nan"),
                **result,
                "ratio_to_in_process": float("nan"),
                "ratio_min": float("nan"),
                "ratio_max": float("nan"),
            }
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
    print_table(rows)
    print(f"start to ready: {ready_s:.2f} s; resident memory after load: {memory:.0f} MiB")
    write_csv("http_load", rows)
    write_csv("server_start", [{"start_to_ready_s": ready_s, "rss_after_load_mib": memory}])


if __name__ == "__main__":
    main()

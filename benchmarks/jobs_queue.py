"""Batch jobs against in-process scoring, in the same run (issue 12).

1. Throughput: a 2,000-image archive job through the queue of a running service (embedded
   defaults: SQLite store and queue, the worker process the service runs at idle priority), from
   submission to the last result, against ``score --engine local``'s in-process loop on the same
   images (every core, one session). Rounds alternate the two. Target: job >= 85 % of in-process.
2. Memory: resident memory of the service and of the worker process beside it, together,
   during a 10,000-image job, against the same after the 2,000-image jobs (so the worker's
   session already exists). Target: growth <= 100 MiB.
3. Priority: /v1/predict latency at concurrency 1 (p95) on an idle service and while a large job
   runs. Target: at most +50 %.
4. Ray: ``score --engine ray`` on a local Ray instance against ``--engine local``, same images;
   both rates, and the rows compared (none lost or duplicated).

Run: .venv/bin/python -m benchmarks.jobs_queue [--model models/default]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx

from ai_photo_detector.batch.engines import ScoreJob, expand_sources, score_local, score_ray
from ai_photo_detector.imaging import upload_limits
from ai_photo_detector.settings import Settings
from benchmarks.common import print_table, write_csv
from benchmarks.http_load import free_port, rss_mb, start_server
from benchmarks.photos import sample_photo

MODELS = Path(__file__).resolve().parents[1] / "models"


def make_photos(folder: Path, count: int) -> list[Path]:
    """``count`` 512x512 JPEGs: 4 photographs at 10 qualities, repeated."""
    variants = [sample_photo(512, 512, i % 4, quality=80 + i // 4) for i in range(40)]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}.jpg"
        path.write_bytes(variants[i % len(variants)])
        paths.append(path)
    return paths


def archive(paths: list[Path]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zipped:
        for path in paths:
            zipped.write(path, path.name)
    return buffer.getvalue()


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        listed = (task / "children").read_text().split()
        found += [int(child) for child in listed]
    return found


def tree_rss_mb(pid: int) -> float:
    """The process and all its descendants (the service and its job worker)."""
    return rss_mb(pid) + sum(tree_rss_mb(child) for child in children(pid))


def in_process_rate(job: ScoreJob) -> float:
    started = time.perf_counter()
    rows = sum(len(page) for page in score_local(job))
    return rows / (time.perf_counter() - started)


def run_job(
    base: str, body: bytes, on_poll: Any = None, submitted_event: threading.Event | None = None
) -> tuple[float, dict[str, Any]]:
    """Images per second from submission to the last result, and the final status."""
    started = time.perf_counter()
    submitted = httpx.post(
        f"{base}/v1/jobs", content=body, headers={"content-type": "application/zip"}, timeout=300
    )
    submitted.raise_for_status()
    if submitted_event is not None:
        submitted_event.set()
    job_id = submitted.json()["id"]
    while True:
        status: dict[str, Any] = httpx.get(f"{base}/v1/jobs/{job_id}", timeout=30).json()
        if on_poll is not None:
            on_poll()
        if status["status"] not in ("queued", "running"):
            break
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    return status["total"] / elapsed, status


def latencies(base: str, photo: bytes, seconds: float) -> list[float]:
    """Sequential /v1/predict calls (concurrency 1) for ``seconds``; milliseconds each."""
    found = []
    with httpx.Client(timeout=30) as client:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            client.post(
                f"{base}/v1/predict", content=photo, headers={"content-type": "image/jpeg"}
            ).raise_for_status()
            found.append((time.perf_counter() - started) * 1000)
    return found


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(MODELS / "default"))
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--large", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="apd-jobs-bench-"))
    paths = make_photos(work / "photos", max(args.images, args.large))
    small = archive(paths[: args.images])
    large = archive(paths[: args.large])
    settings = Settings(model=args.model)
    items = expand_sources([str(work / "photos")], settings.data.extensions)
    job = ScoreJob(
        args.model,
        items[: args.images],
        upload_limits(settings),
        settings.server.max_upload_bytes,
    )
    port = free_port()
    env = {
        "APD_MODEL": args.model,
        "APD_DATABASE_URL": f"sqlite:///{work / 'apd.db'}",
        "APD_JOBS__QUEUE_URL": f"sqlite:///{work / 'queue.db'}",
        "APD_JOBS__SPOOL_DIR": str(work / "spool"),
        "APD_PREDICTION_LOG__ENABLED": "false",
        "APD_JOBS__IN_PROCESS": "true",
    }
    server, _ = start_server(port, env)
    base = f"http://127.0.0.1:{port}"
    rows: list[dict[str, Any]] = []
    try:
        # 1. Throughput, alternating rounds.
        in_process_rate(ScoreJob(args.model, items[:64], job.limits, job.max_bytes))  # warm-up
        ratios, job_rates, local_rates = [], [], []
        for _ in range(args.rounds):
            local_rates.append(in_process_rate(job))
            rate, status = run_job(base, small)
            assert status["done"] + status["failed"] == args.images, status
            job_rates.append(rate)
            ratios.append(rate / local_rates[-1])
        rows.append(
            {
                "measure": f"{args.images}-image job vs in-process (img/s)",
                "baseline": statistics.median(local_rates),
                "measured": statistics.median(job_rates),
                "ratio": statistics.median(ratios),
                "range": f"{min(ratios):.3f}-{max(ratios):.3f}",
                "target": ">= 0.85",
            }
        )

        # 2. Memory during a large job, against memory after the small ones.
        before = tree_rss_mb(server.pid)
        peak = [before]
        rate, status = run_job(base, large, lambda: peak.append(tree_rss_mb(server.pid)))
        assert status["done"] + status["failed"] == args.large, status
        rows.append(
            {
                "measure": f"resident MiB (service + worker) during a {args.large}-image job",
                "baseline": before,
                "measured": max(peak),
                "ratio": max(peak) - before,
                "range": f"{rate:.1f} img/s",
                "target": "growth <= 100 MiB",
            }
        )

        # 3. Interactive latency while a job runs.
        photo = paths[0].read_bytes()
        latencies(base, photo, 2)  # warm-up
        idle = latencies(base, photo, 20)
        accepted = threading.Event()
        runner = threading.Thread(target=run_job, args=(base, large, None, accepted), daemon=True)
        runner.start()
        accepted.wait(300)  # the upload is in; the job is under way
        time.sleep(1)
        busy = latencies(base, photo, 20)
        rows.append(
            {
                "measure": "/v1/predict p95 ms at concurrency 1, idle vs during a job",
                "baseline": p95(idle),
                "measured": p95(busy),
                "ratio": p95(busy) / p95(idle),
                "range": f"p50 {statistics.median(idle):.1f} vs {statistics.median(busy):.1f}",
                "target": "<= 1.5",
            }
        )
        for listed in httpx.get(f"{base}/v1/jobs", timeout=30).json()["jobs"]:
            if listed["status"] in ("queued", "running"):
                httpx.delete(f"{base}/v1/jobs/{listed['id']}", timeout=30)
        runner.join(600)
    finally:
        server.terminate()
        server.wait(timeout=60)

    # 4. Ray against local, with the server stopped.
    try:
        import ray
    except ImportError:
        print("ray is not installed (pip install -e '.[ray]'): its comparison is skipped")
    else:
        ray.init(include_dashboard=False, log_to_driver=False)  # start-up is not scoring
        started = time.perf_counter()
        local_rows = [row for page in score_local(job) for row in page]
        local_rate = len(local_rows) / (time.perf_counter() - started)
        started = time.perf_counter()
        ray_rows = [row for page in score_ray(job, None) for row in page]
        ray_rate = len(ray_rows) / (time.perf_counter() - started)
        same = [r["item"] for r in ray_rows] == list(range(args.images)) and all(
            a["probability"] == b["probability"] for a, b in zip(local_rows, ray_rows, strict=True)
        )
        rows.append(
            {
                "measure": f"score --engine ray vs local, {args.images} images (img/s)",
                "baseline": local_rate,
                "measured": ray_rate,
                "ratio": ray_rate / local_rate,
                "range": "rows identical" if same else "ROWS DIFFER",
                "target": "report both; none lost or duplicated",
            }
        )
    print_table(rows)
    write_csv("jobs_queue", rows)


if __name__ == "__main__":
    main()

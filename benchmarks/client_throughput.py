"""The client against wrk: `ai-photo-detector predict --url` over a folder of 200 photos, and the
same photos through wrk, at the same concurrency, against one server with the shipped model.

Rounds alternate the two. The client's rate is its scoring phase (the library call the command
makes, in this process); the command's wall time, interpreter start included, is reported
beside it. Every photo's verdict from the folder run is checked against /v1/predict one by one.

Target (issue 25): the client >= 80 % of wrk's throughput at the same concurrency.
Run: .venv/bin/python -m benchmarks.client_throughput
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ai_photo_detector.cli.remote import predict_remote
from ai_photo_detector.client import Client
from benchmarks import wrk
from benchmarks.common import print_table, write_csv
from benchmarks.http_load import free_port, start_server, wait_idle
from benchmarks.photos import sample_photo

PHOTOS = 200
CONCURRENCY = 8
ROUNDS = 5
WRK_SECONDS = 3


def make_folder(folder: Path) -> list[Path]:
    paths = []
    for i in range(PHOTOS):
        path = folder / f"listing-{i:03d}.jpg"
        path.write_bytes(sample_photo(512, 512, index=i, quality=80 + i % 15))
        paths.append(path)
    return paths


def client_rate(url: str, paths: list[Path]) -> tuple[float, list[dict[str, Any]]]:
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    predict_remote(paths, url, None, CONCURRENCY, results.append, lambda _: None)
    return len(paths) / (time.perf_counter() - started), results


def command_seconds(url: str, folder: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ai_photo_detector.cli",
            "predict",
            str(folder),
            "--url",
            url,
            "--json",
            "--concurrency",
            str(CONCURRENCY),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def mismatches(url: str, results: list[dict[str, Any]]) -> int:
    wrong = 0
    with Client(url) as client:
        for row in results:
            alone = client.predict(Path(row["path"]))
            same = (row.get("label"), row.get("band")) == (alone.label, alone.band)
            wrong += not same or abs(row["probability"] - alone.probability) > 1e-6
    return wrong


def main() -> None:
    if not wrk.available():
        sys.exit("wrk is not installed (apt-get install wrk)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server, _ = start_server(port)
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            paths = make_folder(folder)
            photos = [p.read_bytes() for p in paths]
            client_rate(url, paths[:16])  # warm both sides
            wrong = None
            for round_number in range(ROUNDS):
                wait_idle(port)
                measured = wrk.load(port, photos, CONCURRENCY, WRK_SECONDS)
                wait_idle(port)
                rate, results = client_rate(url, paths)
                wait_idle(port)
                seconds = command_seconds(url, folder)
                if wrong is None:
                    wrong = mismatches(url, results)
                rows.append(
                    {
                        "round": round_number,
                        "wrk_img_s": round(measured["ok_per_s"], 1),
                        "client_img_s": round(rate, 1),
                        "ratio": round(rate / measured["ok_per_s"], 3),
                        "command_s": round(seconds, 2),
                        "command_img_s": round(PHOTOS / seconds, 1),
                        "errors": sum("error" in r for r in results),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    finally:
        server.terminate()
        server.wait(30)
    print_table(rows)
    ratio = statistics.median(r["ratio"] for r in rows)
    print(
        f"median client / wrk: {ratio:.3f} (target 0.80); verdicts differing from "
        f"/v1/predict one by one: {wrong} of {PHOTOS}"
    )
    write_csv("client_throughput", rows)


if __name__ == "__main__":
    main()

"""Hostile clients against a real service process: thousands of idle connections, and a flood
from one API key, each measured by what it does to an honest client beside it.

Run: .venv/bin/python -m reliability.hostile [--idle 2000] [--only idle|flood]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from reliability.faults import FAST_LOG, RESULTS, photos, start_service, stop_service

FLOOD_KEY, HONEST_KEY = "apd_flooding_key_0123456789abcdef", "apd_honest_key_0123456789abcdef"


class Honest:
    """A well-behaved client: one request at a time; its latencies and any refusal."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        self.client = httpx.Client(base_url=base, headers=headers or {}, timeout=60)
        self.photo = photos(1)[0]
        self.refused: dict[int, int] = {}

    def latencies(self, count: int) -> list[float]:
        out = []
        for _ in range(count):
            began = time.monotonic()
            status = self.client.post("/v1/predict", content=self.photo).status_code
            out.append(1000 * (time.monotonic() - began))
            if status != 200:
                self.refused[status] = self.refused.get(status, 0) + 1
        return out

    def close(self) -> None:
        self.client.close()


def idle_connections(work: Path, idle: int = 2000, header_timeout_s: float = 5) -> dict[str, Any]:
    """``idle`` connections that send nothing: an honest client's latency beside them, and
    how long until the server closes them (its header timeout)."""
    env = {**FAST_LOG, "APD_DATABASE_URL": f"sqlite:///{work / 'store.db'}",
           "APD_SERVER__HEADER_TIMEOUT_S": str(header_timeout_s)}  # fmt: skip
    service = start_service(env, work / "service.log")
    host, port = service.base.removeprefix("http://").split(":")
    sockets: list[socket.socket] = []
    honest = Honest(service.base)
    try:
        honest.latencies(5)  # warm
        before = honest.latencies(30)
        opened_at = time.monotonic()
        for _ in range(idle):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sockets.append(sock)
        beside = honest.latencies(30)
        closed_after, answered_408 = [], 0
        for sock in sockets:  # the server answers 408 and hangs up, or just hangs up
            sock.settimeout(max(0.1, header_timeout_s * 4 - (time.monotonic() - opened_at)))
            try:
                data = sock.recv(1024)
            except TimeoutError:
                continue  # still open after four header timeouts
            except ConnectionResetError:
                data = b""
            answered_408 += data.startswith(b"HTTP/1.1 408")
            closed_after.append(time.monotonic() - opened_at)
        after = honest.latencies(30)
    finally:
        for sock in sockets:
            sock.close()
        honest.close()
        stop_service(service)
    return {
        "scenario": "idle_connections",
        "idle_connections": idle,
        "header_timeout_s": header_timeout_s,
        "honest_p50_ms": {
            "before": round(statistics.median(before), 1),
            "beside_idle": round(statistics.median(beside), 1),
            "after_closed": round(statistics.median(after), 1),
        },
        "honest_refused": honest.refused,
        "closed_by_server": len(closed_after),
        "answered_408_first": answered_408,
        "seconds_until_last_closed": round(max(closed_after), 2) if closed_after else None,
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _flooder(
    base: str, threads: int, cpu: int | None, stop: Any, answered: Any, refused: Any, other: Any
) -> None:
    """A separate process (its threads would otherwise share the measuring client's GIL),
    pinned to one core where there are several, so the service keeps the others."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    photo = photos(1)[0]

    def loop() -> None:
        with httpx.Client(base_url=base, headers={"X-API-Key": FLOOD_KEY}, timeout=60) as c:
            while not stop.is_set():
                status = c.post("/v1/predict", content=photo).status_code
                counter = {200: answered, 429: refused}.get(status, other)
                with counter.get_lock():
                    counter.value += 1

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def one_key_flood(
    work: Path, flood_s: float = 10, flooders: int = 16, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """One key floods far over its limit: once its budget is spent it gets only 429s, and an
    honest key's latency beside it stays near what it was alone. The service's CPU time per
    refusal says what the flood itself costs."""
    from ai_photo_detector.serving.keyring import hash_key

    keys = [
        {"id": "flood", "sha256": hash_key(FLOOD_KEY), "scopes": ["predict"]},
        {"id": "honest", "sha256": hash_key(HONEST_KEY), "scopes": ["predict"]},
    ]
    env = {
        **FAST_LOG,
        "APD_DATABASE_URL": f"sqlite:///{work / 'store.db'}",
        "APD_ENVIRONMENT": "production",
        "APD_AUTH__KEYS": json.dumps(keys),
        "APD_RATE_LIMIT__ENABLED": "true",
        "APD_RATE_LIMIT__LIMIT": "120/minute",
        **(extra_env or {}),
    }
    cpus = sorted(os.sched_getaffinity(0))
    flood_cpu = cpus[-1] if len(cpus) > 1 else None
    spawn = multiprocessing.get_context("spawn")
    stop = spawn.Event()
    answered, refused, other = (spawn.Value("q", 0) for _ in range(3))
    service = start_service(env, work / "service.log")
    honest = Honest(service.base, {"X-API-Key": HONEST_KEY})
    process = spawn.Process(
        target=_flooder,
        args=(service.base, flooders, flood_cpu, stop, answered, refused, other),
    )
    try:
        honest.latencies(5)
        before = honest.latencies(30)
        process.start()
        deadline = time.monotonic() + 60
        while answered.value < 120 and time.monotonic() < deadline:
            time.sleep(0.05)  # the flooding key spends its budget first
        if answered.value < 120:
            raise RuntimeError(f"the flood never spent its budget (exit {process.exitcode})")
        cpu_before, refused_before = _cpu_seconds(service.process.pid), refused.value
        beside = honest.latencies(30)  # the flood now meets only 429s
        time.sleep(max(0.0, flood_s - 1))
        cpu_spent = _cpu_seconds(service.process.pid) - cpu_before
        refusals = refused.value - refused_before
    finally:
        stop.set()
        if process.pid is not None:  # started
            process.join(60)
            if process.is_alive():
                process.kill()
        honest.close()
        stop_service(service)
    beside_s = statistics.fmean(beside) * len(beside) / 1000 + max(0.0, flood_s - 1)
    return {
        "scenario": "one_key_flood",
        "flooding_clients": flooders,
        "flooders_pinned_to_cpu": flood_cpu,
        "limit": "120/minute per key",
        "strategy": env.get("APD_RATE_LIMIT__STRATEGY", "default"),
        "flood_answers": {
            str(k): v
            for k, v in (("200", answered.value), ("429", refused.value), ("other", other.value))
            if v
        },
        "refusals_per_s_beside": round(refusals / beside_s, 1),
        # Honest answers share this CPU time: an upper bound on what one refusal costs.
        "service_cpu_ms_per_refusal": round(1000 * cpu_spent / refusals, 3) if refusals else None,
        "honest_p50_ms": {
            "before": round(statistics.median(before), 1),
            "beside_flood_over_its_limit": round(statistics.median(beside), 1),
        },
        "honest_refused": honest.refused,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--only", choices=["idle", "flood"], help="Run one scenario.")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    scenarios = {"idle": lambda work: idle_connections(work, args.idle), "flood": one_key_flood}
    for name, run in scenarios.items():
        if args.only not in (None, name):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            result = run(Path(tmp))
        result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        print(json.dumps(result, indent=2))
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

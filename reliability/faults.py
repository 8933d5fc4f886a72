"""Fault injection against a real service process and the real PostgreSQL and Redis servers.

Each scenario starts ``ai-photo-detector serve`` with the shipped model, puts it under load at
a fixed concurrency, injects one fault with the servers' own commands (always undone, even when
the scenario fails), and returns what happened as numbers: requests answered by status, rows
the prediction log lost, acknowledged writes lost, seconds to recover. The short versions run
in the test suite (tests/test_faults.py); ``make reliability`` runs the long ones and writes
``reliability/results/*.json``, the figures docs/reliability.md quotes.

Run: .venv/bin/python -m reliability.faults [postgres|redis|sigkill|disk ...] [--outage-s N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "default"
RESULTS = Path(__file__).parent / "results"
POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_START = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
    "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
    "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip


# --- the service ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    base: str
    log: Path

    def metric(self, name: str) -> float:
        """The sum of a Prometheus sample family (0 when absent)."""
        text = httpx.get(f"{self.base}/metrics", timeout=10).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")
        )


def start_service(env: dict[str, str], log: Path, timeout: float = 90) -> Service:
    port = free_port()
    full = {**os.environ, "APD_MODEL": str(MODEL), "APD_SERVER__PORT": str(port), **env}
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "ai_photo_detector.cli", "serve"],
            env=full,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited: {log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200:
                return Service(process, base, log)
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("the service never became ready")


def stop_service(service: Service) -> None:
    if service.process.poll() is None:
        service.process.terminate()
        try:
            service.process.wait(30)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait(10)


def photos(count: int = 4) -> list[bytes]:
    """Smooth, photo-like JPEGs of different sizes (no file needed)."""
    out = []
    for i in range(count):
        rng = np.random.default_rng(i)
        side = 256 + 64 * i
        base = rng.normal(size=(8, 8, 3)).cumsum(0).cumsum(1)
        small = ((base - base.min()) / (np.ptp(base) + 1e-9) * 255).astype(np.uint8)
        image = Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


# --- load -----------------------------------------------------------------------------------------


@dataclass
class LoadStats:
    statuses: Counter[int] = field(default_factory=Counter)
    acknowledged: list[str] = field(default_factory=list)  # prediction ids answered 200
    errors: Counter[str] = field(default_factory=Counter)  # error codes of 4xx/5xx
    transport_errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": sum(self.statuses.values()) + self.transport_errors,
            "by_status": {str(k): v for k, v in sorted(self.statuses.items())},
            "error_codes": dict(self.errors),
            "transport_errors": self.transport_errors,
            "server_errors_5xx": sum(v for k, v in self.statuses.items() if k >= 500),
        }


class Load:
    """``concurrency`` threads posting photos to /v1/predict until stopped."""

    def __init__(self, base: str, concurrency: int = 4, headers: dict[str, str] | None = None):
        self.base, self.concurrency, self.headers = base, concurrency, headers or {}
        self.stats = LoadStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._photos = photos()

    def __enter__(self) -> Load:
        for n in range(self.concurrency):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.base, headers=self.headers, timeout=30) as client:
            i = n
            while not self._stop.is_set():
                i += self.concurrency
                try:
                    response = client.post("/v1/predict", content=self._photos[i % 4])
                except httpx.HTTPError:
                    with self._lock:
                        self.stats.transport_errors += 1
                    time.sleep(0.05)
                    continue
                with self._lock:
                    self.stats.statuses[response.status_code] += 1
                    if response.status_code == 200:
                        self.stats.acknowledged.append(response.json()["prediction_id"])
                    else:
                        code = _error_code(response)
                        self.stats.errors[code] += 1


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"http_{response.status_code}"


# --- the servers' own commands --------------------------------------------------------------------


def _cluster() -> list[str]:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]


def postgres_up() -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", 5432)) == 0


@contextlib.contextmanager
def postgres_stopped() -> Iterator[dict[str, float]]:
    """Stopped within; started again on leaving, whatever happened. The dict gets the moment
    the start was asked for and the seconds until the server took connections."""
    subprocess.run([*_cluster(), "stop", "-m", "fast"], check=True, capture_output=True)
    times: dict[str, float] = {}
    try:
        yield times
    finally:
        times["start_asked"] = time.monotonic()
        start_postgres()
        times["start_took_s"] = time.monotonic() - times["start_asked"]


def start_postgres() -> None:
    if not postgres_up():
        subprocess.run([*_cluster(), "start"], check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        probe = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False)
        if probe.returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError("PostgreSQL did not come back")


def redis_up() -> bool:
    return subprocess.run(["redis-cli", "ping"], capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def redis_stopped() -> Iterator[None]:
    subprocess.run(["redis-cli", "shutdown", "nosave"], capture_output=True, check=False)
    try:
        yield
    finally:
        if not redis_up():
            subprocess.run(REDIS_START, check=True, capture_output=True)
        deadline = time.monotonic() + 30
        while not redis_up() and time.monotonic() < deadline:
            time.sleep(0.1)


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    from sqlalchemy import create_engine, text

    name = f"apd_faults_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def count_rows(url: str, table: str = "predictions") -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def wait_for_rows(url: str, expected: int, timeout: float) -> tuple[int, float]:
    """Rows in the log once it reaches ``expected`` (or the timeout), and the seconds taken."""
    started = time.monotonic()
    found = -1
    while time.monotonic() - started < timeout:
        with contextlib.suppress(Exception):
            found = count_rows(url)
            if found >= expected:
                break
        time.sleep(0.2)
    return found, time.monotonic() - started


def _zip_of(images: list[bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, data in enumerate(images):
            archive.writestr(f"photo{i}.jpg", data)
    return buffer.getvalue()


# --- scenarios ------------------------------------------------------------------------------------

FAST_LOG = {
    "APD_PREDICTION_LOG__FLUSH_INTERVAL_S": "0.1",
    "APD_PREDICTION_LOG__RETRY_FIRST_S": "0.5",
    "APD_PREDICTION_LOG__RETRY_MOST_S": "2",
    "APD_RATE_LIMIT__ENABLED": "false",
    "APD_MONITORING__ENABLED": "false",
}


def postgres_outage(work: Path, outage_s: float = 10, concurrency: int = 4) -> dict[str, Any]:
    """PostgreSQL stops under load and comes back: predictions keep being answered, the log
    keeps its rows through the outage and writes them after, writes answer 503 meanwhile."""
    with fresh_postgres_database() as url:
        env = {
            **FAST_LOG,
            "APD_DATABASE_URL": url,
            "APD_JOBS__QUEUE_URL": f"sqlite:///{work / 'queue.db'}",
            "APD_JOBS__SPOOL_DIR": str(work / "jobs"),
        }
        service = start_service(env, work / "service.log")
        during: dict[str, Any] = {}
        try:
            with Load(service.base, concurrency) as load:
                time.sleep(2)
                with postgres_stopped() as restart:
                    stopped_at = time.monotonic()
                    answered_at_stop = len(load.stats.acknowledged)
                    time.sleep(min(2.0, outage_s / 2))
                    some_id = load.stats.acknowledged[0]
                    feedback = httpx.post(
                        f"{service.base}/v1/feedback",
                        json={"prediction_id": some_id, "label": "ai"},
                        timeout=30,
                    )
                    job = httpx.post(
                        f"{service.base}/v1/jobs",
                        content=_zip_of(photos(2)),
                        headers={"Content-Type": "application/zip"},
                        timeout=30,
                    )
                    during = {
                        "feedback": [feedback.status_code, _error_code(feedback)],
                        "feedback_retry_after": feedback.headers.get("retry-after"),
                        "job_submission": [job.status_code, _error_code(job)],
                    }
                    time.sleep(max(0.0, outage_s - (time.monotonic() - stopped_at)))
                    answered_at_restart = len(load.stats.acknowledged)
                # How long the rows held through the outage take to land, load still running.
                wait_for_rows(url, answered_at_restart, timeout=60)
                recovered_s = time.monotonic() - restart["start_asked"]
                time.sleep(1)
            acknowledged = len(load.stats.acknowledged)
            found, _ = wait_for_rows(url, acknowledged, timeout=60)
            during["predictions_answered_during_outage"] = answered_at_restart - answered_at_stop
            feedback_after = httpx.post(
                f"{service.base}/v1/feedback",
                json={"prediction_id": load.stats.acknowledged[-1], "label": "ai"},
                timeout=30,
            ).status_code
            dropped = service.metric("apd_prediction_log_dropped_total")
            retries = service.metric("apd_prediction_log_retries_total")
        finally:
            stop_service(service)
    return {
        "scenario": "postgres_outage",
        "outage_s": outage_s,
        "concurrency": concurrency,
        "load": load.stats.as_dict(),
        "during_outage": during,
        "acknowledged_predictions": acknowledged,
        "log_rows_found": found,
        "log_rows_lost": acknowledged - found,
        "log_dropped_metric": dropped,
        "log_retries_metric": retries,
        "seconds_for_postgres_to_start": round(restart["start_took_s"], 2),
        "seconds_from_restart_to_outage_rows_written": round(recovered_s, 2),
        "feedback_after_recovery": feedback_after,
    }


def redis_outage(work: Path, outage_s: float = 10, concurrency: int = 4) -> dict[str, Any]:
    """Redis (the rate limits' storage) stops under load: the 'local' policy keeps limiting in
    memory, nothing answers 5xx, and the shared storage is used again once Redis is back."""
    env = {
        **FAST_LOG,
        "APD_DATABASE_URL": f"sqlite:///{work / 'store.db'}",
        "APD_RATE_LIMIT__ENABLED": "true",
        "APD_RATE_LIMIT__LIMIT": "100000/minute",
        "APD_RATE_LIMIT__STORAGE_URI": "redis://127.0.0.1:6379/14",
        "APD_RATE_LIMIT__ON_STORAGE_ERROR": "local",
        "APD_RATE_LIMIT__STORAGE_RETRY_S": "1",
    }
    subprocess.run(["redis-cli", "-n", "14", "flushdb"], capture_output=True, check=False)
    service = start_service(env, work / "service.log")
    try:
        with Load(service.base, concurrency) as load:
            time.sleep(2)
            with redis_stopped():
                time.sleep(outage_s)
                during = dict(load.stats.statuses)
            restarted = time.monotonic()
            recovered_s = None
            subprocess.run(["redis-cli", "-n", "14", "flushdb"], capture_output=True, check=False)
            while time.monotonic() - restarted < 30:  # the limiter writes its counters again
                keys = subprocess.run(
                    ["redis-cli", "-n", "14", "dbsize"], capture_output=True, text=True, check=False
                ).stdout.strip()
                if keys.isdigit() and int(keys) > 0:
                    recovered_s = time.monotonic() - restarted
                    break
                time.sleep(0.1)
            time.sleep(1)
        storage_errors = service.metric("apd_rate_limit_storage_errors_total")
    finally:
        stop_service(service)
    return {
        "scenario": "redis_outage",
        "outage_s": outage_s,
        "policy": "local",
        "load": load.stats.as_dict(),
        "statuses_until_redis_returned": {str(k): v for k, v in during.items()},
        "storage_errors_metric": storage_errors,
        "seconds_until_redis_used_again": None if recovered_s is None else round(recovered_s, 2),
    }


def sigkill_mid_write(work: Path, run_s: float = 5, concurrency: int = 4) -> dict[str, Any]:
    """SIGKILL while predictions are logged and feedback is written (SQLite, durable log):
    after a restart the database passes its integrity check, every acknowledged feedback is
    there, and the spool gives back the acknowledged predictions."""
    database = work / "store.db"
    env = {
        **FAST_LOG,
        "APD_DATABASE_URL": f"sqlite:///{database}",
        "APD_PREDICTION_LOG__DURABLE": "true",
        "APD_PREDICTION_LOG__SPOOL_DIR": str(work / "spool"),
        "APD_PREDICTION_LOG__FLUSH_INTERVAL_S": "0.5",
    }
    service = start_service(env, work / "service.log")
    acknowledged_feedback: list[str] = []
    stop = threading.Event()

    def reviewer(load: Load) -> None:
        with httpx.Client(base_url=service.base, timeout=30) as client:
            given: set[str] = set()
            while not stop.is_set():
                candidates = [i for i in load.stats.acknowledged[:-50] if i not in given]
                if not candidates:
                    time.sleep(0.05)
                    continue
                with contextlib.suppress(httpx.HTTPError):
                    answer = client.post(
                        "/v1/feedback", json={"prediction_id": candidates[0], "label": "real"}
                    )
                    if answer.status_code in (200, 201):
                        acknowledged_feedback.append(candidates[0])
                given.add(candidates[0])

    try:
        with Load(service.base, concurrency) as load:
            feedback_thread = threading.Thread(target=reviewer, args=(load,), daemon=True)
            feedback_thread.start()
            time.sleep(run_s)
            # A slow CPU logs fewer predictions in run_s: the kill waits for feedback writes to
            # be under way too, so both kinds of write are interrupted (bounded wait).
            deadline = time.monotonic() + 12 * run_s
            while len(acknowledged_feedback) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            os.kill(service.process.pid, signal.SIGKILL)
            service.process.wait(10)
            stop.set()
            feedback_thread.join(30)
    finally:
        stop_service(service)
    acknowledged = set(load.stats.acknowledged)
    with sqlite3.connect(database) as connection:
        integrity_after_kill = connection.execute("PRAGMA integrity_check").fetchone()[0]
        rows_before_restart = connection.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    restarted = start_service(env, work / "service.log")
    try:
        time.sleep(2)  # the spool is replayed by the log writer as it starts
        replayed = restarted.metric("apd_prediction_log_replayed_total")
    finally:
        stop_service(restarted)
    with sqlite3.connect(database) as connection:
        integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
        logged = {row[0] for row in connection.execute("SELECT id FROM predictions")}
        feedback = {row[0] for row in connection.execute("SELECT prediction_id FROM feedback")}
    return {
        "scenario": "sigkill_mid_write",
        "run_s": run_s,
        "load": load.stats.as_dict(),
        "integrity_check_after_kill": integrity_after_kill,
        "integrity_check_after_restart": integrity,
        "acknowledged_predictions": len(acknowledged),
        "rows_in_database_at_kill": rows_before_restart,
        "rows_replayed_from_spool": replayed,
        "acknowledged_predictions_missing": len(acknowledged - logged),
        "acknowledged_feedback": len(acknowledged_feedback),
        "acknowledged_feedback_missing": len(set(acknowledged_feedback) - feedback),
    }


def disk_full(work: Path, size_mb: int = 6, run_s: float = 8) -> dict[str, Any]:
    """The database and stored images share a small full filesystem: predictions are still
    answered, failed writes are counted, and logging resumes once space is freed."""
    mount = work / "small"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        return {"scenario": "disk_full", "skipped": mounted.stderr.decode().strip()}
    try:
        database = mount / "store.db"
        env = {
            **FAST_LOG,
            "APD_DATABASE_URL": f"sqlite:///{database}",
            "APD_PREDICTION_LOG__STORE_IMAGES": "true",
            "APD_PREDICTION_LOG__IMAGE_DIR": str(mount / "images"),
            "APD_JOBS__ENABLED": "false",
        }
        service = start_service(env, work / "service.log")
        try:
            filler = mount / "filler"
            with Load(service.base, 4) as load:
                time.sleep(1)
                with contextlib.suppress(OSError), filler.open("wb", buffering=0) as sink:
                    while True:  # until the filesystem says it is full
                        sink.write(b"\0" * 4096)
                time.sleep(run_s)
                during = dict(load.stats.statuses)
                feedback = httpx.post(
                    f"{service.base}/v1/feedback",
                    json={"prediction_id": load.stats.acknowledged[0], "label": "ai"},
                    timeout=30,
                )
                retries = service.metric("apd_prediction_log_retries_total")
            # Space comes back once the load has stopped. With two more seconds of load after
            # freeing it, a fast machine (AMX Xeon) left 5-36 rows unwritten after 60 s in 2 of
            # 3 runs: its stored images can fill the freed 6 MB again, which is a second full
            # disk, not the recovery this scenario measures. Stopping the load first: 4 of 4.
            filler.unlink()
            freed = time.monotonic()
            found, _ = wait_for_rows(f"sqlite:///{database}", len(load.stats.acknowledged), 60)
            recovered_s = time.monotonic() - freed
            dropped = service.metric("apd_prediction_log_dropped_total")
        finally:
            stop_service(service)
        with sqlite3.connect(database) as connection:
            integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
    return {
        "scenario": "disk_full",
        "filesystem_mb": size_mb,
        "load": load.stats.as_dict(),
        "statuses_while_full": {str(k): v for k, v in during.items()},
        "feedback_while_full": [feedback.status_code, _error_code(feedback)],
        "log_retries_metric_while_full": retries,
        "acknowledged_predictions": len(load.stats.acknowledged),
        "log_rows_found": found,
        "log_rows_lost": len(load.stats.acknowledged) - found,
        "log_dropped_metric": dropped,
        "seconds_from_space_freed_to_every_row_written": round(recovered_s, 2),
        "integrity_check": integrity,
    }


SCENARIOS = {
    "postgres": postgres_outage,
    "redis": redis_outage,
    "sigkill": sigkill_mid_write,
    "disk": disk_full,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    parser.add_argument("--outage-s", type=float, default=20)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    for name in args.scenarios:
        with tempfile.TemporaryDirectory() as tmp:
            kwargs = {"outage_s": args.outage_s} if name in ("postgres", "redis") else {}
            result = SCENARIOS[name](Path(tmp), **kwargs)
        result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        print(json.dumps(result, indent=2))
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()


__all__ = ["SCENARIOS", "asdict"]

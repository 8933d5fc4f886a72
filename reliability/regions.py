"""Two regions and a global front on one host; one whole region taken down, then brought back.

Each region runs its own API process (``serve``, which works jobs off beside itself), its own
PostgreSQL server (a cluster of its own on its own port) and its own Redis server (job queue,
rate limits). The model registry is shared: one MLflow tracking database and artifact folder;
both regions follow the ``champion`` alias. HAProxy (Debian's package) is the global front:
active checks on each region's readiness route, a request that cannot reach a region retried on
the other, and ``/v1/jobs/<region>-…`` sent to the job's own region.

Under steady load through the front (predictions, feedback for some of them, a job per region),
region A is taken down with the servers' own commands (SIGTERM to its service, ``pg_ctl stop``,
``redis-cli shutdown``); a new model version is promoted while it is down; then A is started
again. The report: requests failed during the switch and after it, the time until the front
stops sending to A, rows lost in either region (predictions and feedback acknowledged, job
results), the time until A serves again, and whether A serves the promotion it missed.

Run: .venv/bin/python -m reliability.regions [--outage-s 20] [--load-s 10]
(as root, PostgreSQL's own commands run as the ``postgres`` user). The short version runs in
tests/test_regions.py; docs/reliability.md quotes the long one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from reliability.faults import RESULTS, free_port, photos

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "fast"  # four processes share two cores: the light bundle
FRONT = ROOT / "deploy" / "regions"
NAMES = ("a", "b")
MODEL_NAME = "ai-photo-detector"
REVIEW_DELAY_S = 2.0  # between a prediction and the reviewer's verdict on it


# --- PostgreSQL and Redis of one region, with their own commands --------------------------------


def _postgres_bin(name: str) -> str:
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).is_file():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: install PostgreSQL's server package")
    return found


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: its commands run as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {seconds} s")
        time.sleep(0.1)


@dataclass
class Postgres:
    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def create(self) -> None:
        self.folder.mkdir(parents=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        subprocess.run(
            _as_postgres(
                [_postgres_bin("initdb"), "-D", str(self.folder), "-U", "postgres",
                 "--auth=trust", "--no-sync"]
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_postgres(
                [_postgres_bin("pg_ctl"), "-D", str(self.folder), "-o", options, "-w",
                 "-l", str(self.folder / "server.log"), "start"]
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip

    def stop(self) -> None:
        subprocess.run(
            _as_postgres([_postgres_bin("pg_ctl"), "-D", str(self.folder), "-m", "fast", "stop"]),
            check=False,
            capture_output=True,
        )


@dataclass
class Redis:
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait(lambda: _port_open(self.port), 20, f"redis on {self.port}")

    def stop(self) -> None:
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "nosave"],
            check=False,
            capture_output=True,
        )
        if self.process is not None:
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


# --- a region -----------------------------------------------------------------------------------


@dataclass
class Region:
    name: str
    folder: Path
    shared: Path  # the registry every region reads
    peers: dict[str, str]
    api_port: int = field(default_factory=free_port)
    postgres: Postgres = field(init=False)
    redis: Redis = field(default_factory=lambda: Redis(free_port()))
    api: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.postgres = Postgres(self.folder / "postgres", free_port())

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "APD_MODEL": f"models:/{MODEL_NAME}@champion",
            "APD_MLFLOW_TRACKING_URI": f"sqlite:///{self.shared / 'mlflow.db'}",
            "APD_REGISTRY__CACHE_DIR": str(self.folder / "models"),
            "APD_REGISTRY__POLL_INTERVAL_S": "1",
            "APD_DATABASE_URL": self.postgres.url,
            "APD_JOBS__QUEUE_URL": self.redis.url,
            "APD_JOBS__SPOOL_DIR": str(self.folder / "spool"),
            "APD_JOBS__IN_PROCESS": "true",
            "APD_JOBS__CHUNK_SIZE": "4",
            "APD_RATE_LIMIT__ENABLED": "false",
            "APD_PREDICTION_LOG__SPOOL_DIR": str(self.folder / "log-spool"),
            "APD_REGION__NAME": self.name,
            "APD_REGION__PEERS": json.dumps(self.peers),
            "APD_SERVER__PORT": str(self.api_port),
            "APD_SERVER__GRACEFUL_TIMEOUT_S": "5",
            "APD_MONITORING__ENABLED": "false",
        }

    def start(self) -> float:
        """Its database, its Redis, then its service; seconds until the service is ready."""
        started = time.monotonic()
        if not (self.postgres.folder / "PG_VERSION").is_file():
            self.postgres.create()
        self.postgres.start()
        self.redis.start()
        log = (self.folder / "api.log").open("ab")
        self.api = subprocess.Popen(
            [sys.executable, "-m", "ai_photo_detector.cli", "serve"],
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
        )
        _wait(self.ready, 120, f"region {self.name} ready")
        return time.monotonic() - started

    def ready(self) -> bool:
        if self.api is not None and self.api.poll() is not None:
            tail = (self.folder / "api.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"region {self.name}'s service exited:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.base}/v2/health/ready", timeout=1).status_code == 200
        return False

    def stop(self) -> None:
        """The whole region, each part with its own command: service (and the job worker it
        runs), then PostgreSQL, then Redis."""
        if self.api is not None and self.api.poll() is None:
            self.api.terminate()
            try:
                self.api.wait(30)
            except subprocess.TimeoutExpired:
                self.api.kill()
                self.api.wait(10)
        self.postgres.stop()
        self.redis.stop()

    def serving_version(self) -> str:
        models = httpx.get(f"{self.base}/v1/models", timeout=5).json()["models"]
        return str(models[0].get("registry_version") or "")

    def stored(self, table: str, column: str, ids: list[str]) -> set[str]:
        """Which of ``ids`` the region's database holds."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.postgres.url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    text(f"SELECT {column} FROM {table} WHERE {column} = ANY(:ids)"),
                    {"ids": ids},
                )
                return {str(row[0]) for row in rows}
        finally:
            engine.dispose()


# --- the global front ---------------------------------------------------------------------------


@dataclass
class Front:
    folder: Path
    regions: dict[str, Region]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def socket_path(self) -> Path:
        return self.folder / "haproxy.sock"

    def start(self) -> None:
        a, b = self.regions.values()
        config = FRONT / "haproxy.cfg"
        env = {
            **os.environ,
            "APD_REGION_A": a.name,
            "APD_REGION_B": b.name,
            "APD_REGION_A_ADDR": f"127.0.0.1:{a.api_port}",
            "APD_REGION_B_ADDR": f"127.0.0.1:{b.api_port}",
            "APD_FRONT_BIND": f"127.0.0.1:{self.port}",
            "APD_FRONT_DIR": str(FRONT),
            "APD_FRONT_STATS": str(self.socket_path),
        }
        subprocess.run(["haproxy", "-c", "-q", "-f", str(config)], env=env, check=True)
        self.process = subprocess.Popen(
            ["haproxy", "-db", "-f", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(lambda: _port_open(self.port), 20, "the front listening")
        _wait(lambda: all(self.up(n) for n in self.regions), 30, "the front seeing both regions")

    def up(self, name: str) -> bool:
        """Whether the front sends the shared traffic to region ``name`` (its check passes)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.socket_path))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        for line in data.decode().splitlines():
            fields = line.split(",")
            if len(fields) > 17 and fields[0] == "regions" and fields[1] == name:
                return fields[17].startswith("UP")
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


# --- load through the front ---------------------------------------------------------------------


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    predictions: dict[str, list[str]] = field(default_factory=dict)  # region -> ids answered
    feedback: list[str] = field(default_factory=list)  # prediction ids whose verdict was stored
    feedback_deferred: int = 0  # "retry later" answers (the prediction's region was down)
    failed_at: list[float] = field(default_factory=list)  # monotonic times of failed requests


class Traffic:
    """Threads posting photos through the front, and one sending feedback for every fifth
    answer (again later when its region said "retry later")."""

    def __init__(self, front: str, concurrency: int = 3) -> None:
        self.front, self.concurrency = front, concurrency
        self.tally = Tally()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._owed: list[tuple[float, str]] = []  # (when it may be sent, prediction id)
        self._photos = photos()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Traffic:
        targets = [self._predict] * self.concurrency + [self._feedback]
        for n, target in enumerate(targets):
            thread = threading.Thread(target=target, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _failed(self, what: str) -> None:
        with self._lock:
            self.tally.statuses[what] += 1
            self.tally.failed_at.append(time.monotonic())

    def _predict(self, n: int) -> None:
        with httpx.Client(base_url=self.front, timeout=30) as client:
            i = n
            while not self._stop.is_set():
                i += 1
                try:
                    response = client.post("/v1/predict", content=self._photos[i % 4])
                except httpx.HTTPError as exc:
                    self._failed(type(exc).__name__)
                    continue
                if response.status_code != 200:
                    self._failed(f"predict {response.status_code}")
                    continue
                answer = response.json()
                region = response.headers.get("x-apd-region", "?")
                with self._lock:
                    self.tally.statuses["predict 200"] += 1
                    self.tally.predictions.setdefault(region, []).append(answer["prediction_id"])
                    if i % 5 == 0:  # a reviewer's verdict comes a little later
                        due = time.monotonic() + REVIEW_DELAY_S
                        self._owed.append((due, answer["prediction_id"]))

    def _feedback(self, _: int) -> None:
        with httpx.Client(base_url=self.front, timeout=30) as client:
            while not (self._stop.is_set() and not self._owed):
                with self._lock:
                    ready = bool(self._owed) and self._owed[0][0] <= time.monotonic()
                    prediction_id = self._owed.pop(0)[1] if ready else None
                if prediction_id is None:
                    time.sleep(0.05)
                    continue
                if self._send_feedback(client, prediction_id):
                    continue
                if self._stop.is_set() and time.monotonic() > self._give_up_at:
                    break
                with self._lock:  # told to retry later: again in a second
                    self._owed.append((time.monotonic() + 1.0, prediction_id))
                    self._owed.sort()

    _give_up_at = float("inf")

    def finish(self, grace_s: float) -> None:
        """Stop sending predictions; feedback still owed has ``grace_s`` to be taken."""
        self._give_up_at = time.monotonic() + grace_s
        self.__exit__()

    def _send_feedback(self, client: httpx.Client, prediction_id: str) -> bool:
        body = {"prediction_id": prediction_id, "label": "real", "source": "drill"}
        try:
            response = client.post("/v1/feedback", json=body)
        except httpx.HTTPError as exc:
            self._failed(f"feedback {type(exc).__name__}")
            return False
        if response.status_code in (200, 201):
            with self._lock:
                self.tally.statuses["feedback 2xx"] += 1
                self.tally.feedback.append(prediction_id)
            return True
        code = _code(response)
        with self._lock:
            if code == "region_unavailable":  # answered clearly: the client tries later
                self.tally.feedback_deferred += 1
            else:
                self.tally.statuses[f"feedback {response.status_code} {code}"] += 1
                self.tally.failed_at.append(time.monotonic())
        return False


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"http_{response.status_code}"


# --- the registry ---------------------------------------------------------------------------------


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ai_photo_detector.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr[-2000:]}")
    return done.stdout + done.stderr


def _registry_env(shared: Path) -> dict[str, str]:
    return {
        **os.environ,
        "APD_MLFLOW_TRACKING_URI": f"sqlite:///{shared / 'mlflow.db'}",
        "APD_DATABASE_URL": f"sqlite:///{shared / 'operations.db'}",  # the audit log of promotions
        "APD_REGISTRY__CACHE_DIR": str(shared / "cache"),
    }


def second_version(folder: Path) -> Path:
    """The same weights as a new bundle version: what a promotion moves to."""
    from ai_photo_detector.model.bundle import write_manifest

    target = folder / "fast-next"
    shutil.copytree(MODEL, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["version"] = f"{manifest['version']}-next"
    write_manifest(target, {k: v for k, v in manifest.items() if k != "files"})
    return target


# --- the drill ----------------------------------------------------------------------------------


@contextlib.contextmanager
def topology(folder: Path) -> Iterator[tuple[dict[str, Region], Front]]:
    shared = folder / "shared"
    shared.mkdir()
    env = _registry_env(shared)
    _cli(env, "models", "register", str(MODEL), "--reason", "drill: first version")
    _cli(env, "models", "promote", "1", "--force", "--reason", "drill: first champion")
    ports = {name: free_port() for name in NAMES}
    regions = {
        name: Region(
            name,
            folder / name,
            shared,
            {peer: f"http://127.0.0.1:{ports[peer]}" for peer in NAMES if peer != name},
            api_port=ports[name],
        )
        for name in NAMES
    }
    front = Front(folder, regions)
    try:
        for region in regions.values():
            region.start()
        front.start()
        yield regions, front
    finally:
        front.stop()
        for region in regions.values():
            region.stop()


def _job(region: str, count: int) -> str:
    """A job submitted to one region's own address (so each region holds one)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, photo in enumerate(photos() * (count // 4 + 1)):
            if i < count:
                archive.writestr(f"listing-{i}.jpg", photo)
    response = httpx.post(
        f"{region}/v1/jobs",
        content=buffer.getvalue(),
        headers={"Content-Type": "application/zip"},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["id"])


def drill(outage_s: float, load_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="apd-regions-") as tmp:
        folder = Path(tmp)
        os.chmod(folder, 0o755)  # PostgreSQL, run as its own user, reaches its folder
        with topology(folder) as (regions, front):
            a, b = regions["a"], regions["b"]
            first_version = b.serving_version()
            traffic = Traffic(front.base).__enter__()
            jobs = [_job(region.base, 12) for region in regions.values()]
            time.sleep(load_s)

            down_at = time.monotonic()
            marked: list[float] = []
            watcher = threading.Thread(target=_watch_down, args=(front, "a", marked), daemon=True)
            watcher.start()
            a.stop()
            stopped_s = time.monotonic() - down_at
            watcher.join(30)
            if not marked:
                raise RuntimeError("the front never marked region a down")
            front_s = marked[0] - down_at
            _cli(
                _registry_env(folder / "shared"),
                "models", "register", str(second_version(folder)), "--reason", "drill",
            )  # fmt: skip
            _cli(
                _registry_env(folder / "shared"),
                "models", "promote", "2", "--force", "--reason", "drill: promoted while a is down",
            )  # fmt: skip
            _wait(lambda: b.serving_version().endswith("/2"), 60, "region b following")
            time.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))

            back_at = time.monotonic()
            restart_s = a.start()
            _wait(lambda: front.up("a"), 30, "the front sending to region a again")
            front_back_s = time.monotonic() - back_at
            a_version = a.serving_version()
            time.sleep(load_s)
            traffic.finish(grace_s=30)
            finished = _wait_jobs(front.base, jobs)

            tally = traffic.tally
            during = [t for t in tally.failed_at if down_at <= t <= back_at + front_back_s]
            lost_predictions = {
                name: len(ids) - len(regions[name].stored("predictions", "id", ids))
                for name, ids in tally.predictions.items()
                if name in regions
            }
            lost_feedback = sum(
                len(ids) - len(regions[name].stored("feedback", "prediction_id", ids))
                for name in regions
                if (ids := [p for p in tally.feedback if p.startswith(f"{name}-")])
            )
            return {
                "outage_s": round(outage_s, 1),
                "requests": dict(tally.statuses),
                "failed_during_switch": len(during),
                "failed_after": len(tally.failed_at) - len(during),
                "region_stop_s": round(stopped_s, 2),
                "front_marked_down_after_s": round(front_s, 2),
                "returning_region_ready_s": round(restart_s, 2),
                "front_sends_again_after_s": round(front_back_s, 2),
                "predictions_acknowledged": {k: len(v) for k, v in tally.predictions.items()},
                "predictions_lost": lost_predictions,
                "feedback_acknowledged": len(tally.feedback),
                "feedback_deferred_answers": tally.feedback_deferred,
                "feedback_lost": lost_feedback,
                "jobs": finished,
                "version_before": first_version,
                "version_b_during_outage": b.serving_version(),
                "version_a_after_return": a_version,
                "promotion_reached_returning_region": a_version == b.serving_version(),
            }


def _watch_down(front: Front, name: str, marked: list[float]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not front.up(name):
            marked.append(time.monotonic())
            return
        time.sleep(0.05)


def _wait_jobs(front: str, jobs: list[str], seconds: float = 120) -> list[dict[str, Any]]:
    """Each job's end state, read through the front (routed to the job's region)."""
    out = []
    deadline = time.monotonic() + seconds
    for job_id in jobs:
        while True:
            status = httpx.get(f"{front}/v1/jobs/{job_id}", timeout=10).json()
            if status["status"] in ("done", "cancelled") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        rows = httpx.get(f"{front}/v1/jobs/{job_id}/results", timeout=30).text.splitlines()
        out.append(
            {
                "id": job_id,
                "status": status["status"],
                "total": status["total"],
                "result_rows": len([r for r in rows if r.strip()]),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage-s", type=float, default=20.0)
    parser.add_argument("--load-s", type=float, default=10.0)
    args = parser.parse_args()
    report = drill(args.outage_s, args.load_s)
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "regions.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""A worker killed with SIGKILL mid-job loses nothing and duplicates nothing: another worker
picks its chunk up once the lease lapses, and the job ends with exactly one row per image.

Run on the embedded pair (SQLite store, SQLite queue) and on the scale-out pair (PostgreSQL
store, Redis queue), each for real.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from ai_photo_detector.batch.queue import JobQueue
from ai_photo_detector.batch.service import JobService, Submission, Submitter
from ai_photo_detector.persistence.jobs import JobStore
from ai_photo_detector.persistence.schema import Job, JobChunk, JobResult
from ai_photo_detector.persistence.store import Store
from ai_photo_detector.settings import Settings

IMAGES = 1200


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(params=["embedded", "scale-out"])
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(store URL, queue URL)."""
    if request.param == "embedded":
        yield f"sqlite:///{tmp_path / 'apd.db'}", f"sqlite:///{tmp_path / 'queue.db'}"
        return
    if not _redis_up():
        pytest.skip("needs Redis on 127.0.0.1:6379")
    postgres = request.getfixturevalue("postgres_url")
    yield postgres, "redis://127.0.0.1:6379/0"


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkilled_worker_loses_and_duplicates_nothing(
    backends: tuple[str, str], bundle_dir: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    database_url, queue_url = backends
    jobs_settings = {
        "queue_url": queue_url,
        "queue_name": f"apd-test-{uuid.uuid4().hex[:8]}",
        "chunk_size": 8,
        "lease_s": 1.5,
        "reap_interval_s": 0.2,
        "storage_roots": [str(tiny_dataset)],
    }
    settings = Settings(model=str(bundle_dir), database_url=database_url, jobs=jobs_settings)
    store = Store(database_url)
    queue = JobQueue(settings.jobs)
    service = JobService(
        JobStore(store), queue, settings.jobs, settings.data.extensions, 20_000_000
    )
    photos = sorted(str(p) for p in tiny_dataset.rglob("*.jpg"))
    paths = [photos[i % len(photos)] for i in range(IMAGES)]
    submission = Submission(Submitter("tests", False), None, uuid.uuid4().hex, "ai-photo-detector")
    job, _ = service.submit_manifest(submission, paths)

    env = {
        **os.environ,
        "APD_MODEL": str(bundle_dir),
        "APD_DATABASE_URL": database_url,
        **{
            f"APD_JOBS__{k.upper()}": json.dumps(v) if isinstance(v, list) else str(v)
            for k, v in jobs_settings.items()
        },
    }
    command = [sys.executable, "-m", "ai_photo_detector.cli", "worker", "--threads", "1"]

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def job_now() -> Job:
        found = service.jobs.get(job.id)
        assert found is not None
        return found

    def chunks_running() -> int:
        with store.session() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(JobChunk)
                    .where(JobChunk.job_id == job.id, JobChunk.status == "running")
                )
                or 0
            )

    try:
        killed_mid_chunk = False
        for _ in range(5):  # a kill may land between two chunks; then try again
            worker = start()
            _wait(lambda: job_now().done >= 40 and chunks_running() > 0, 60, "a chunk in work")
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            if chunks_running() > 0:  # its holder is dead: only the lease brings it back
                killed_mid_chunk = True
                break
        assert killed_mid_chunk
        assert job_now().done < IMAGES

        survivor = start()
        try:
            _wait(lambda: job_now().status == "done", 120, "the job to finish")
        finally:
            survivor.terminate()
            assert survivor.wait(30) == 0  # SIGTERM: finishes its chunk, exits cleanly
        finished = job_now()
        assert (finished.done, finished.failed) == (IMAGES, 0)
        with store.session() as session:
            items = list(session.scalars(select(JobResult.item).where(JobResult.job_id == job.id)))
            retried = session.scalar(
                select(func.max(JobChunk.attempts)).where(JobChunk.job_id == job.id)
            )
        assert sorted(items) == list(range(IMAGES))  # one row per image, none twice
        assert retried is not None and retried >= 2  # the killed chunk was worked again
    finally:
        queue.flush()
        store.close()


def test_a_model_no_worker_holds_ends_in_clear_error_rows(
    tmp_path: Path, tiny_dataset: Path
) -> None:
    """A worker without the job's model gives its chunk back; once no worker has taken it in
    max_attempts tries, the images are answered model_not_found, and the job finishes."""
    from ai_photo_detector.batch.worker import ChunkRunner
    from ai_photo_detector.errors import ModelNotFound
    from ai_photo_detector.imaging import DecodeLimits

    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'apd.db'}",
        jobs={
            "queue_url": f"sqlite:///{tmp_path / 'queue.db'}",
            "storage_roots": [str(tiny_dataset)],
            "max_attempts": 2,
        },
    )
    store = Store(settings.database_url)
    queue = JobQueue(settings.jobs)
    jobs = JobStore(store)
    service = JobService(jobs, queue, settings.jobs, settings.data.extensions, 20_000_000)
    photo = str(sorted(tiny_dataset.rglob("*.jpg"))[0])
    job, _ = service.submit_manifest(
        Submission(Submitter("tests", False), None, "x", "retired@0.1"), [photo]
    )

    def holds_nothing(name: str) -> Any:
        raise ModelNotFound(f"this worker does not hold model {name!r}")

    runner = ChunkRunner(jobs, settings.jobs, holds_nothing, DecodeLimits(), 20_000_000)
    runner.feed_back_to(queue)
    try:
        assert [runner.run(job.id, 0) for _ in range(3)] == [False, False, True]
        finished = jobs.get(job.id)
        assert finished is not None and (finished.status, finished.failed) == ("done", 1)
        (row,) = jobs.results(job.id, -1, 10)
        assert row.error_code == "model_not_found" and "retired@0.1" in str(row.error_message)
    finally:
        queue.flush()
        store.close()

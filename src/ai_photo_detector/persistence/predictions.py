"""The prediction log: rows queued on the request path, written in batches by one thread.

A request only does ``queue.put_nowait``: it never waits for the database. When the queue is
full the row is dropped and counted (``apd_prediction_log_dropped_total``), never blocking the
request or crashing the service.

When the database is unreachable (a connection, timeout or disk-full error) the writer keeps
the batch and retries it with backoff, so an outage costs nothing until the queue's bound is
reached; rows beyond it are dropped and counted, and writing resumes by itself when the
database returns. An error in the rows themselves (a constraint) drops that batch, counted.

In durable mode every row is also appended to a local spool (:mod:`.spool`) before it is
queued, so a killed process loses no row it accepted: the next start replays them.

The writer wakes once per flush interval and takes what has queued, rather than waiting on the
queue: a thread woken for every row preempts inference threads on a small box.
"""

from __future__ import annotations

import builtins
import errno
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Insert, Table
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ai_photo_detector.persistence.schema import Prediction
from ai_photo_detector.persistence.spool import RowSpool, read_segment
from ai_photo_detector.persistence.store import Store
from ai_photo_detector.settings import PredictionLogSettings

logger = logging.getLogger(__name__)
PREDICTIONS = cast(Table, Prediction.__table__)


@dataclass
class PredictionRecord:
    id: str
    created_at: datetime
    request_id: str
    api_key_id: str | None
    model_name: str
    model_version: str
    route: str
    label: str
    band: str
    score: float
    queue_ms: float
    preprocess_ms: float
    inference_ms: float
    image_sha256: str
    width: int
    height: int
    format: str
    bytes: int
    brightness: float
    contrast: float
    saturation: float
    sharpness: float
    jpeg_quality: float
    embedding: builtins.bytes
    reasons: str = ""  # why the band is what it is, comma-joined (low_margin, unfamiliar, ...)
    provenance: dict[str, Any] | None = None  # evidence.provenance of the answer
    model_label: str | None = None  # the model's own label (``label`` is what was answered)
    image_path: str | None = None
    paired_id: str | None = None  # a shadow row names the primary prediction it mirrors
    image_data: builtins.bytes | None = field(default=None, repr=False)  # kept only when asked
    spool_seq: int | None = field(default=None, repr=False)  # its line in the durable spool


@dataclass
class LogCounters:
    """Updated from request, spare-time and writer threads: ``+=`` alone could lose counts."""

    written: int = 0
    dropped: int = 0
    errors: int = 0
    retries: int = 0  # writes put off because the database was unreachable
    replayed: int = 0  # rows an earlier process left in the spool, now written
    deferred: int = 0  # rows left in the spool at stop, for the next start
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


# What SQLite says when the file is busy, full or gone; its other OperationalErrors (a missing
# column, say) are the rows' or the schema's fault and would never pass on a retry.
_SQLITE_TRANSIENT = ("locked", "disk", "full", "unable to open", "busy")
_OS_TRANSIENT = {errno.ENOSPC, errno.EDQUOT, errno.EIO}


def unreachable(exc: BaseException) -> bool:
    """Whether a write failed for want of a database or disk (worth retrying), not for its
    rows."""
    if isinstance(exc, InterfaceError | PoolTimeout):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        if exc.orig is not None and type(exc.orig).__module__.startswith("sqlite3"):
            return any(word in str(exc.orig).lower() for word in _SQLITE_TRANSIENT)
        return True  # PostgreSQL: connection-level (schema faults are ProgrammingError)
    return isinstance(exc, OSError) and exc.errno in _OS_TRANSIENT


class Backoff:
    def __init__(self, first_s: float, most_s: float) -> None:
        self.first_s, self.most_s = first_s, most_s
        self.delay_s = first_s
        self.next_at = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def failed(self) -> None:
        self.next_at = time.monotonic() + self.delay_s
        self.delay_s = min(self.delay_s * 2, self.most_s)

    def succeeded(self) -> None:
        self.delay_s, self.next_at = self.first_s, 0.0


def _insert_ignoring_existing(dialect: str) -> Insert:
    from sqlalchemy.dialects import postgresql, sqlite

    if dialect == "postgresql":
        return postgresql.insert(PREDICTIONS).on_conflict_do_nothing(index_elements=["id"])
    return sqlite.insert(PREDICTIONS).on_conflict_do_nothing(index_elements=["id"])


class PredictionLog:
    def __init__(self, store: Store, settings: PredictionLogSettings) -> None:
        self.store = store
        self.settings = settings
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=settings.queue_size)
        self.counters = LogCounters()
        self.spool = (
            RowSpool(settings.spool_dir, fsync=settings.spool_fsync) if settings.durable else None
        )
        self._submit_lock = threading.Lock()  # spool order must be queue order
        self._held: list[PredictionRecord] = []  # a batch waiting for the database to return
        self._backoff = Backoff(settings.retry_first_s, settings.retry_most_s)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._last_cleanup = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()  # flush() and close() need not wait out the interval
        self._promised = 0  # rows still being computed by submit_later
        self._promised_lock = threading.Lock()
        self._thread.start()

    @property
    def depth(self) -> int:
        return self.queue.qsize() + len(self._held)

    def submit(self, record: PredictionRecord) -> bool:
        """Queue a row; False (and counted) when the queue is full or the log is closed."""
        with self._submit_lock:
            # A stopped writer would never write the row; a full queue must not block.
            if self._stop.is_set() or self.queue.full():
                self.counters.add(dropped=1)
                return False
            if self.spool is not None:
                try:
                    self._keep_image(record)  # the spool holds the image's path, not its bytes
                    record.spool_seq = self.spool.append(self._fields(record))
                except OSError:  # the disk refuses: the row is still queued, not durable
                    logger.exception("a prediction row could not be spooled")
                    self.counters.add(errors=1)
            self.queue.put_nowait(record)
        return True

    @property
    def durable(self) -> bool:
        return self.spool is not None

    def submit_built(self, build: Callable[[], PredictionRecord]) -> None:
        """Make the row and queue it (spooled first in durable mode); a failed ``build`` drops
        the row and counts it as an error, as a failed write does."""
        try:
            self.submit(build())
        except Exception:
            logger.exception("a prediction row could not be made; it is dropped")
            self.counters.add(errors=1, dropped=1)

    def submit_later(self, build: Callable[[], PredictionRecord], pool: Executor) -> None:
        """Queue the row ``build`` makes on ``pool``, off the request's path.

        :meth:`flush` waits for it like for a queued row. A failed ``build`` drops the row and
        counts it as an error, as a failed write does.
        """
        with self._promised_lock:
            self._promised += 1

        def make_and_submit() -> None:
            try:
                self.submit_built(build)  # queued before the promise is released
            finally:
                with self._promised_lock:
                    self._promised -= 1

        try:
            pool.submit(make_and_submit)
        except RuntimeError:  # the pool is shut down: the service is stopping
            with self._promised_lock:
                self._promised -= 1
            self.counters.add(dropped=1)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued or promised row is written (or dropped); True when done."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._promised == 0 and self.queue.unfinished_tasks == 0:
                return True
            self._wake.set()
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (one try if the database is away), then stop the writer."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=timeout)
        if self._thread.is_alive():
            logger.warning("the prediction log writer did not finish within %.0f s", timeout)
        elif self.spool is not None:
            self.spool.close()

    def _run(self) -> None:
        if self.spool is not None:
            try:
                self._replay()
            except Exception:  # whatever the spool holds, the writer must start
                logger.exception("replaying the prediction spool failed; logging goes on")
                self.counters.add(errors=1)
        while True:
            self._wake.wait(self.settings.flush_interval_s)
            self._wake.clear()
            stopping = self._stop.is_set()
            try:
                while self._write_batch() == self.settings.batch_size:
                    pass  # a backlog: write on until the queue is short of a batch
                self._cleanup_images()
            except Exception:  # the writer must outlive any one failure
                logger.exception("the prediction log writer failed; it goes on")
                self.counters.add(errors=1)
            if stopping:
                self._abandon()
                return

    def _write_batch(self) -> int:
        """Write up to one batch of rows (a held one first); how many were written."""
        retrying = bool(self._held)
        if retrying and not (self._backoff.due() or self._stop.is_set()):
            return 0
        batch = self._held or self._take()
        if not batch:
            return 0
        try:
            self._insert([self._row(record) for record in batch])
        except Exception as exc:  # the log must never take the service down
            if unreachable(exc) and not self._stop.is_set():
                if not retrying:
                    logger.warning("the database is unreachable; %d rows wait: %s", len(batch), exc)
                self._held = batch
                self._backoff.failed()
                self.counters.add(retries=1)
                return 0
            if not unreachable(exc):
                logger.exception("writing %d predictions failed; the batch is dropped", len(batch))
                self.counters.add(errors=1, dropped=len(batch))
                self._finish(batch)
                return 0
            self._held = batch  # stopping with the database away: _abandon counts them
            return 0
        if retrying:
            logger.info("the database is back; the waiting rows are written")
        self.counters.add(written=len(batch))
        self._backoff.succeeded()
        self._finish(batch)
        return len(batch)

    def _take(self) -> list[PredictionRecord]:
        batch: list[PredictionRecord] = []
        while len(batch) < self.settings.batch_size:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _finish(self, batch: list[PredictionRecord]) -> None:
        self._held = []
        seqs = [record.spool_seq for record in batch if record.spool_seq is not None]
        if self.spool is not None and seqs:
            self.spool.release(max(seqs))
        for _ in batch:
            self.queue.task_done()

    def _abandon(self) -> None:
        """At stop, rows the database did not take: left in the spool (durable) or dropped;
        counted either way."""
        rows = self._held + self._take()
        while rest := self._take():
            rows += rest
        if not rows:
            return
        spooled = sum(record.spool_seq is not None for record in rows)
        self.counters.add(deferred=spooled, dropped=len(rows) - spooled)
        logger.warning(
            "stopping with %d rows unwritten: %d left in the spool, %d dropped",
            len(rows),
            spooled,
            len(rows) - spooled,
        )
        self._held = []
        for _ in rows:
            self.queue.task_done()

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        # Core insert on the table (not the ORM bulk path): far less Python per row. Idempotent:
        # a retried or replayed batch may have landed before its connection broke, and a row
        # already in must not cost the rest of its batch.
        with self.store.begin() as connection:
            connection.execute(_insert_ignoring_existing(self.store.engine.dialect.name), rows)

    def _replay(self) -> None:
        """Write what an earlier process left in the spool, then delete it."""
        assert self.spool is not None
        for path in self.spool.orphans():
            try:
                rows, broken = read_segment(path)
                records_all = [PredictionRecord(**row) for row in rows]
            except (OSError, TypeError, ValueError, AttributeError):
                # Unreadable, or written by a version with other fields: kept aside, counted.
                logger.exception("%s cannot be replayed; renamed to .bad", path.name)
                path.rename(path.with_suffix(".bad"))
                self.counters.add(errors=1)
                continue
            if broken:
                logger.warning("%s: %d unreadable lines (cut by a kill?)", path.name, broken)
                self.counters.add(errors=broken, dropped=broken)
            size = self.settings.batch_size
            for start in range(0, len(records_all), size):
                records = records_all[start : start + size]
                while not self._replay_batch(records):
                    self._backoff.failed()
                    if self._stop.wait(max(0.0, self._backoff.next_at - time.monotonic())):
                        return  # stopping: the segment stays for the next start
            path.unlink(missing_ok=True)
            logger.info("replayed %d prediction rows from %s", len(rows), path.name)

    def _replay_batch(self, records: list[PredictionRecord]) -> bool:
        try:
            self._insert([self._row(record) for record in records])
        except Exception as exc:
            if unreachable(exc):
                self.counters.add(retries=1)
                return False
            logger.exception("replaying %d rows failed; they are dropped", len(records))
            self.counters.add(errors=1, dropped=len(records))
            return True
        self.counters.add(replayed=len(records))
        self._backoff.succeeded()
        return True

    @staticmethod
    def _fields(record: PredictionRecord) -> dict[str, Any]:
        row = dict(vars(record))  # shallow: asdict() would deep-copy every field
        row.pop("spool_seq")
        return row

    def _row(self, record: PredictionRecord) -> dict[str, Any]:
        row = self._fields(record)
        data = row.pop("image_data")
        if self.settings.store_images and data is not None:
            row["image_path"] = str(self._save_image(record, data))
        return row

    def _keep_image(self, record: PredictionRecord) -> None:
        if self.settings.store_images and record.image_data is not None:
            record.image_path = str(self._save_image(record, record.image_data))
            record.image_data = None

    def _save_image(self, record: PredictionRecord, data: bytes) -> Path:
        folder = Path(self.settings.image_dir) / record.image_sha256[:2]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{record.image_sha256}.{record.format.lower()}"
        if not path.exists():  # whole or not at all: a full disk must not leave half a file
            partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
            try:
                partial.write_bytes(data)
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)
        return path

    def _cleanup_images(self) -> None:
        """Delete stored images past their retention, at most once a minute."""
        if not self.settings.store_images or time.monotonic() - self._last_cleanup < 60:
            return
        self._last_cleanup = time.monotonic()
        cutoff = (datetime.now(UTC) - timedelta(days=self.settings.retention_days)).timestamp()
        root = Path(self.settings.image_dir)
        if not root.is_dir():
            return
        for path in root.glob("*/*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except OSError:
                continue

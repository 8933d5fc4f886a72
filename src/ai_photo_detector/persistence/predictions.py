"""The prediction log: rows queued on the request path, written in batches by one thread.

A request only does ``queue.put_nowait``: it never waits for the database. When the queue is
full the row is dropped and counted (``apd_prediction_log_dropped_total``), never blocking the
request or crashing the service; a database error drops that batch and is counted too.

The writer wakes once per flush interval and takes what has queued, rather than waiting on the
queue: a thread woken for every row preempts inference threads on a small box.
"""

from __future__ import annotations

import builtins
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, insert

from ai_photo_detector.persistence.schema import Prediction
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
    reasons: str = ""  # why the band is 'uncertain', comma-joined (low_margin, unfamiliar)
    image_path: str | None = None
    paired_id: str | None = None  # a shadow row names the primary prediction it mirrors
    image_data: builtins.bytes | None = field(default=None, repr=False)  # kept only when asked


@dataclass
class LogCounters:
    """Updated from request, spare-time and writer threads: ``+=`` alone could lose counts."""

    written: int = 0
    dropped: int = 0
    errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, written: int = 0, dropped: int = 0, errors: int = 0) -> None:
        with self._lock:
            self.written += written
            self.dropped += dropped
            self.errors += errors


class PredictionLog:
    def __init__(self, store: Store, settings: PredictionLogSettings) -> None:
        self.store = store
        self.settings = settings
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=settings.queue_size)
        self.counters = LogCounters()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._last_cleanup = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()  # flush() and close() need not wait out the interval
        self._promised = 0  # rows still being computed by submit_later
        self._promised_lock = threading.Lock()
        self._thread.start()

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    def submit(self, record: PredictionRecord) -> bool:
        """Queue a row; False (and counted) when the queue is full or the log is closed."""
        if self._stop.is_set():  # the writer is gone or going: the row would never be written
            self.counters.add(dropped=1)
            return False
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.counters.add(dropped=1)
            return False
        return True

    def submit_later(self, build: Callable[[], PredictionRecord], pool: Executor) -> None:
        """Queue the row ``build`` makes on ``pool``, off the request's path.

        :meth:`flush` waits for it like for a queued row. A failed ``build`` drops the row and
        counts it as an error, as a failed write does.
        """
        with self._promised_lock:
            self._promised += 1

        def make_and_submit() -> None:
            try:
                self.submit(build())  # queued before the promise is released: flush sees one
            except Exception:
                logger.exception("a prediction row could not be made; it is dropped")
                self.counters.add(errors=1, dropped=1)
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
        """Write what is queued, then stop the writer."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=timeout)
        if self._thread.is_alive():
            logger.warning("the prediction log writer did not finish within %.0f s", timeout)

    def _run(self) -> None:
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
                return

    def _write_batch(self) -> int:
        """Write up to one batch of queued rows; how many were taken."""
        batch: list[PredictionRecord] = []
        while len(batch) < self.settings.batch_size:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        if batch:
            self._write(batch)
            for _ in batch:
                self.queue.task_done()
        return len(batch)

    def _write(self, batch: list[PredictionRecord]) -> None:
        try:
            rows = [self._row(record) for record in batch]
            # Core insert on the table (not the ORM bulk path): far less Python per row.
            with self.store.begin() as connection:
                connection.execute(insert(PREDICTIONS), rows)
            self.counters.add(written=len(rows))
        except Exception:  # the log must never take the service down
            logger.exception("writing %d predictions failed; the batch is dropped", len(batch))
            self.counters.add(errors=1, dropped=len(batch))

    def _row(self, record: PredictionRecord) -> dict[str, Any]:
        row = dict(vars(record))  # shallow: asdict() would deep-copy every field
        data = row.pop("image_data")
        if self.settings.store_images and data is not None:
            row["image_path"] = str(self._save_image(record, data))
        return row

    def _save_image(self, record: PredictionRecord, data: bytes) -> Path:
        folder = Path(self.settings.image_dir) / record.image_sha256[:2]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{record.image_sha256}.{record.format.lower()}"
        if not path.exists():
            path.write_bytes(data)
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

"""The store on SQLite and on the real PostgreSQL server: migrations, log, feedback, history."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from ai_photo_detector.monitoring.windows import load_window
from ai_photo_detector.persistence.drift_history import history, save_report
from ai_photo_detector.persistence.feedback import (
    PredictionNotFound,
    export_dataset,
    live_accuracy,
    record_feedback,
)
from ai_photo_detector.persistence.predictions import PredictionLog, PredictionRecord
from ai_photo_detector.persistence.schema import Feedback
from ai_photo_detector.persistence.store import Store, downgrade, tables, upgrade
from ai_photo_detector.settings import PredictionLogSettings

TABLES = {"predictions", "feedback", "drift_reports", "alerts"}


def record(
    i: int, model_version: str = "1", label: str = "ai", score: float = 0.9
) -> PredictionRecord:
    rng = np.random.default_rng(i)
    return PredictionRecord(
        id=uuid.uuid4().hex,
        created_at=datetime.now(UTC),
        request_id=f"r{i}",
        api_key_id="shop",
        model_name="detector",
        model_version=model_version,
        route="primary",
        label=label,
        band="ai" if label == "ai" else "real",
        score=score,
        queue_ms=1.0,
        preprocess_ms=2.0,
        inference_ms=3.0,
        image_sha256=f"{i:064x}",
        width=640,
        height=480,
        format="JPEG",
        bytes=12345,
        brightness=0.5,
        contrast=0.2,
        saturation=0.3,
        sharpness=0.01,
        jpeg_quality=90.0,
        embedding=rng.normal(size=8).astype("<f2").tobytes(),
    )


def test_migrations_up_and_down(database_url: str) -> None:
    store = Store(database_url)
    assert tables(store.engine) >= TABLES
    downgrade(store.engine, "base")
    assert not (TABLES & tables(store.engine))
    upgrade(store.engine)
    assert tables(store.engine) >= TABLES
    store.close()


def test_verdicts_sent_at_once_on_one_prediction_keep_one_row(database_url: str) -> None:
    """Concurrent verdicts of one source on one prediction race to insert the same row: every
    call answers, and one row remains."""
    from concurrent.futures import ThreadPoolExecutor

    store = Store(database_url)
    log = PredictionLog(store, PredictionLogSettings(flush_interval_s=0.05))
    item = record(0, label="ai")
    assert log.submit(item) and log.flush(10)
    barrier = threading.Barrier(8)

    def verdict(n: int) -> bool:
        barrier.wait()
        return record_feedback(store, item.id, ["ai", "real"][n % 2], "reviewer").created

    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(verdict, range(8)))
    assert sum(created) == 1
    with store.session() as session:
        rows = session.scalars(select(Feedback).where(Feedback.prediction_id == item.id)).all()
    assert len(rows) == 1 and rows[0].label in {"ai", "real"}
    log.close()
    store.close()


def test_log_writes_in_batches_and_feedback_is_idempotent(
    database_url: str, tmp_path: Path
) -> None:
    store = Store(database_url)
    log = PredictionLog(store, PredictionLogSettings(batch_size=7, flush_interval_s=0.05))
    records = [record(i, label="ai" if i % 2 else "real") for i in range(20)]
    for item in records:
        assert log.submit(item)
    assert log.flush(10)
    assert log.counters.written == 20 and log.counters.dropped == 0

    first = record_feedback(store, records[1].id, "ai", "reviewer")
    again = record_feedback(store, records[1].id, "ai", "reviewer")
    assert first.created and not again.created and not again.updated
    changed = record_feedback(store, records[1].id, "real", "reviewer")
    assert changed.updated
    record_feedback(store, records[1].id, "real", "second-opinion")  # another source counts apart
    record_feedback(store, records[2].id, "real", "reviewer")
    record_feedback(store, records[3].id, "real", "reviewer")
    with pytest.raises(PredictionNotFound):
        record_feedback(store, "nope", "ai", "reviewer")

    [stats] = live_accuracy(store, datetime.now(UTC) - timedelta(hours=1), "ai")
    # reviewed: #1 predicted ai / real, #2 predicted real / real, #3 predicted ai / real
    assert stats.count == 3 and stats.accuracy == pytest.approx(1 / 3)
    assert stats.precision == 0.0 and np.isnan(stats.recall)
    assert stats.labels == ["ai", "real"] and stats.confusion == [[0, 0], [2, 1]]

    summary = export_dataset(store, tmp_path / "export", datetime.now(UTC) - timedelta(hours=1))
    assert summary == {"reviewed": 3, "images_copied": 0, "images_not_stored": 3}
    assert (tmp_path / "export" / "unstored.csv").read_text().count("\n") == 4
    log.close()
    store.close()


def test_drift_history_survives_a_restart(database_url: str) -> None:
    store = Store(database_url)
    log = PredictionLog(store, PredictionLogSettings(flush_interval_s=0.05))
    for i in range(30):
        log.submit(record(i))
    log.flush(10)
    window = load_window(store, "detector", "1", count=25)
    assert len(window) == 25 and window.embeddings.shape == (25, 8)
    assert window.image_stats["jpeg_quality"].tolist() == [90.0] * 25
    report = {"drift": True, "severity": "warning", "window_size": 25, "detectors": {}}
    save_report(store, "detector", "1", "count:25", report)
    log.close()
    store.close()

    reopened = Store(database_url)  # a new process, or another replica
    [entry] = history(reopened, "detector")
    assert entry["drift"] is True and entry["severity"] == "warning" and entry["size"] == 25
    reopened.close()


class StalledStore(Store):
    """A store whose writes wait for a gate: the log writer stalls like on a slow database."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.gate = threading.Event()

    def begin(self):  # type: ignore[no-untyped-def]
        self.gate.wait(30)
        return super().begin()


def test_full_log_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    store = StalledStore(f"sqlite:///{tmp_path / 'full.db'}")
    settings = PredictionLogSettings(queue_size=5, batch_size=2, flush_interval_s=0.01)
    log = PredictionLog(store, settings)
    accepted = [log.submit(record(i)) for i in range(200)]  # returns at once, never waits
    dropped = accepted.count(False)
    assert dropped == log.counters.dropped
    assert dropped >= 200 - settings.queue_size - settings.batch_size
    store.gate.set()
    assert log.flush(10)
    assert log.counters.written == 200 - dropped
    log.close()
    store.close()


def test_database_errors_drop_the_batch_and_are_counted(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'broken.db'}")
    log = PredictionLog(store, PredictionLogSettings(flush_interval_s=0.05))
    log.submit(record(1))
    log.flush(5)
    broken = record(0)
    broken.label = None  # type: ignore[assignment]  # NOT NULL: the insert fails
    log.submit(broken)
    log.flush(5)
    assert log.counters.errors == 1 and log.counters.dropped == 1 and log.counters.written == 1
    log.submit(record(2))  # and the writer goes on
    log.flush(5)
    assert log.counters.written == 2
    log.close()
    store.close()


def test_rows_made_later_are_flushed_and_failures_counted(tmp_path: Path) -> None:
    """submit_later: flush() waits for rows still being made; a failing maker drops its row."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    store = Store(f"sqlite:///{tmp_path / 'later.db'}")
    log = PredictionLog(store, PredictionLogSettings(flush_interval_s=0.01))
    release = threading.Event()

    def slow_row() -> PredictionRecord:
        release.wait(10)
        return record(1)

    def broken_row() -> PredictionRecord:
        raise ValueError("no statistics")

    with ThreadPoolExecutor(2) as pool:
        log.submit_later(slow_row, pool)
        log.submit_later(broken_row, pool)
        assert not log.flush(0.3)  # the slow row is promised, not yet queued
        release.set()
        assert log.flush(10)
    assert log.counters.written == 1
    assert log.counters.errors == 1 and log.counters.dropped == 1
    stopped = ThreadPoolExecutor(1)
    stopped.shutdown()
    log.submit_later(slow_row, stopped)  # a stopping service drops the row, never raises
    assert log.counters.dropped == 2 and log.flush(1)
    log.close()
    store.close()


def test_the_writer_outlives_a_failure_and_flush_does_not_wait_out_the_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'resilient.db'}")
    log = PredictionLog(store, PredictionLogSettings(flush_interval_s=60))
    calls = {"n": 0}
    write_batch = log._write_batch

    def failing_once() -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk unreadable")  # before any row is taken: it stays queued
        return write_batch()

    monkeypatch.setattr(log, "_write_batch", failing_once)
    log.submit(record(1))
    assert log.flush(5)  # woken by flush: a 60 s interval is not waited out
    assert log.counters.errors == 1 and log.counters.written == 1
    log.submit(record(2))
    assert log.flush(5)
    assert log.counters.written == 2  # the writer is still alive
    log.close()
    store.close()


def test_rows_after_close_are_counted_as_dropped(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'closed.db'}")
    log = PredictionLog(store, PredictionLogSettings(flush_interval_s=0.01))
    assert log.submit(record(1))
    log.close()
    assert log.counters.written == 1
    assert not log.submit(record(2))
    assert log.counters.dropped == 1
    store.close()

"""The prediction log through a database outage, a full disk and a killed process.

Outages are simulated at the connection (the store raises what SQLAlchemy raises when the server
is gone); the kill is a real SIGKILL of a child process that has accepted rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from ai_photo_detector.persistence import spool as spool_module
from ai_photo_detector.persistence.predictions import PREDICTIONS, PredictionLog
from ai_photo_detector.persistence.spool import RowSpool, read_segment
from ai_photo_detector.persistence.store import Store
from ai_photo_detector.settings import PredictionLogSettings
from test_store import record


class OutageStore(Store):
    """A store whose database can be switched off: connections fail as with a stopped server."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.down = threading.Event()
        self.attempts = 0

    def begin(self):  # type: ignore[no-untyped-def]
        if self.down.is_set():
            self.attempts += 1
            raise OperationalError("connect", {}, ConnectionRefusedError("server is down"))
        return super().begin()


def rows_in(store: Store) -> int:
    with store.begin() as connection:
        return int(connection.execute(select(func.count()).select_from(PREDICTIONS)).scalar_one())


def settings(**overrides: object) -> PredictionLogSettings:
    base: dict[str, object] = {
        "flush_interval_s": 0.02,
        "retry_first_s": 0.05,
        "retry_most_s": 0.2,
    }
    return PredictionLogSettings(**(base | overrides))  # type: ignore[arg-type]


def test_rows_wait_through_an_outage_and_are_written_when_the_database_returns(
    tmp_path: Path,
) -> None:
    store = OutageStore(f"sqlite:///{tmp_path / 'log.db'}")
    log = PredictionLog(store, settings(batch_size=16))
    store.down.set()
    for i in range(40):
        assert log.submit(record(i))
    assert not log.flush(0.5)  # nothing can be written, nothing is dropped
    assert store.attempts >= 2, "the writer retries with backoff"
    assert log.counters.dropped == 0 and log.counters.written == 0
    assert log.depth == 40
    store.down.clear()  # the server is back: no restart needed
    assert log.flush(10)
    assert log.counters.written == 40 and log.counters.dropped == 0
    assert log.counters.retries >= 2
    assert rows_in(store) == 40
    log.close()
    store.close()


def test_an_outage_longer_than_the_queue_drops_and_counts_the_overflow(tmp_path: Path) -> None:
    store = OutageStore(f"sqlite:///{tmp_path / 'log.db'}")
    log = PredictionLog(store, settings(queue_size=10, batch_size=4))
    store.down.set()
    accepted = [log.submit(record(i)) for i in range(50)]
    log.flush(0.3)
    store.down.clear()
    assert log.flush(10)
    kept = accepted.count(True)
    assert log.counters.dropped == 50 - kept > 0
    assert log.counters.written == kept == rows_in(store)
    log.close()
    store.close()


def test_the_full_queue_bound_holds_while_a_batch_is_held(tmp_path: Path) -> None:
    store = OutageStore(f"sqlite:///{tmp_path / 'log.db'}")
    log = PredictionLog(store, settings(queue_size=6, batch_size=4))
    store.down.set()
    for i in range(4):
        log.submit(record(i))
    log.flush(0.3)  # the writer took a batch of 4 and holds it
    accepted = [log.submit(record(10 + i)) for i in range(20)]
    # Held rows do not free room: the queue bound is the bound on what an outage keeps.
    assert accepted.count(True) <= 6
    store.down.clear()
    assert log.flush(10)
    assert rows_in(store) == 4 + accepted.count(True)
    log.close()
    store.close()


def test_durable_rows_left_at_stop_are_replayed_by_the_next_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    spool = tmp_path / "spool"
    store = OutageStore(url)
    log = PredictionLog(store, settings(durable=True, spool_dir=str(spool)))
    store.down.set()
    for i in range(12):
        log.submit(record(i))
    log.close()  # the database never came back
    assert log.counters.deferred == 12 and log.counters.dropped == 0
    assert sum(len(read_segment(p)[0]) for p in spool.glob("*.jsonl")) == 12
    store.close()

    store = Store(url)
    log = PredictionLog(store, settings(durable=True, spool_dir=str(spool)))
    assert log.flush(10)
    log.close()
    assert log.counters.replayed == 12 and rows_in(store) == 12
    assert not list(spool.glob("*.jsonl")), "a replayed segment is deleted"
    store.close()


def test_a_durable_row_spools_the_path_of_its_image_not_the_image(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    spool, images = tmp_path / "spool", tmp_path / "images"
    store = OutageStore(url)
    log = PredictionLog(
        store,
        settings(durable=True, spool_dir=str(spool), store_images=True, image_dir=str(images)),
    )
    store.down.set()
    row = record(0)
    row.image_data = b"\xff\xd8 the uploaded bytes " * 1000
    log.submit(row)
    log.close()
    (spooled,) = [r for p in spool.glob("*.jsonl") for r in read_segment(p)[0]]
    assert spooled["image_data"] is None and Path(spooled["image_path"]).read_bytes() == (
        b"\xff\xd8 the uploaded bytes " * 1000
    )
    assert sum(p.stat().st_size for p in spool.glob("*.jsonl")) < 5000
    store.close()
    store = Store(url)  # replayed later, the row still names its image
    log = PredictionLog(store, settings(durable=True, spool_dir=str(spool)))
    assert log.flush(10)
    log.close()
    with store.begin() as connection:
        paths = connection.execute(select(PREDICTIONS.c.image_path)).scalars().all()
    assert paths == [spooled["image_path"]]
    store.close()


def test_written_rows_leave_no_spool_behind(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'log.db'}")
    spool = tmp_path / "spool"
    log = PredictionLog(store, settings(durable=True, spool_dir=str(spool), batch_size=8))
    for i in range(30):
        log.submit(record(i))
    assert log.flush(10)
    assert log.counters.written == 30
    assert not list(spool.glob("*.jsonl"))
    log.close()
    store.close()


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[4])
    from ai_photo_detector.persistence.predictions import PredictionLog
    from ai_photo_detector.persistence.store import Store
    from ai_photo_detector.settings import PredictionLogSettings
    from test_store import record

    store = Store(sys.argv[1])
    # The writer would wait a minute: every accepted row is still only queued when killed.
    log = PredictionLog(
        store, PredictionLogSettings(durable=True, spool_dir=sys.argv[2], flush_interval_s=60)
    )
    for i in range(int(sys.argv[3])):
        assert log.submit(record(i))
    print("accepted", flush=True)
    sys.stdin.read()
    """
)


def test_rows_accepted_before_a_sigkill_are_all_in_the_database_after_restart(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    spool = tmp_path / "spool"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(spool), "50", str(Path(__file__).parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "accepted"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)

    store = Store(url)
    assert rows_in(store) == 0  # nothing reached the database before the kill
    log = PredictionLog(store, settings(durable=True, spool_dir=str(spool)))
    assert log.flush(10)
    log.close()
    assert rows_in(store) == 50 and log.counters.replayed == 50
    store.close()


def test_a_live_segment_of_another_process_is_never_replayed(tmp_path: Path) -> None:
    live = RowSpool(tmp_path)
    live.append({"id": "x"})
    other = RowSpool(tmp_path)  # another process's view: the live segment is locked
    assert list(other.orphans()) == []
    live.close()  # unreleased: stays, now an orphan
    assert len(list(other.orphans())) == 1


def test_a_row_already_in_the_database_does_not_cost_the_rest_of_its_batch(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'log.db'}")
    log = PredictionLog(store, settings())
    first = record(0)
    log.submit(first)
    assert log.flush(10)
    for row in [record(1), first, record(2)]:  # written twice, as a replayed spool would
        log.submit(row)
    assert log.flush(10)
    log.close()
    assert rows_in(store) == 3 and log.counters.dropped == 0 and log.counters.errors == 0
    store.close()


def test_a_replay_listing_the_folder_while_a_segment_opens_leaves_it_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CI once caught the writer's start-up replay between a new segment's open and its lock:
    # it replayed the live rows (written twice, a batch dropped) and deleted the segment.
    seen: list[list[Path]] = []
    lock = spool_module.fcntl.flock

    def replay_first(fd: int, operation: int) -> None:
        if not seen:
            seen.append([])  # the inner orphans() locks too: list only once
            seen[0] = list(RowSpool(tmp_path).orphans())
        lock(fd, operation)

    monkeypatch.setattr(spool_module.fcntl, "flock", replay_first)
    live = RowSpool(tmp_path)
    live.append({"id": "x"})
    assert seen == [[]]
    assert list(RowSpool(tmp_path).orphans()) == []
    live.close()


def test_a_segment_left_half_opened_by_a_kill_is_removed(tmp_path: Path) -> None:
    stale = tmp_path / f"00000000000000000001-1{spool_module.OPENING_SUFFIX}"
    stale.touch()
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    fresh = tmp_path / f"00000000000000000002-1{spool_module.OPENING_SUFFIX}"
    fresh.touch()  # another process between its open and its lock: left alone
    live = RowSpool(tmp_path)
    live.append({"id": "x"})
    assert list(RowSpool(tmp_path).orphans()) == []
    assert not stale.exists() and fresh.exists()
    assert len(list(tmp_path.glob("*.jsonl"))) == 1  # the live segment stays
    live.close()


def test_an_orphan_stays_locked_while_one_process_replays_it(tmp_path: Path) -> None:
    left = RowSpool(tmp_path)
    left.append({"id": "x"})
    left.close()
    first = RowSpool(tmp_path).orphans()
    [path] = [next(first)]
    assert list(RowSpool(tmp_path).orphans()) == []  # a second process starting meanwhile
    path.unlink()
    first.close()
    assert list(RowSpool(tmp_path).orphans()) == []


def test_a_line_cut_by_the_kill_is_counted_not_fatal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    spool = tmp_path / "spool"
    store = OutageStore(url)
    log = PredictionLog(store, settings(durable=True, spool_dir=str(spool)))
    store.down.set()
    for i in range(3):
        log.submit(record(i))
    log.close()
    [segment] = spool.glob("*.jsonl")
    with segment.open("a") as handle:
        handle.write('{"id": "half a ro')
    store.down.clear()
    log = PredictionLog(store, settings(durable=True, spool_dir=str(spool)))
    assert log.flush(10)
    log.close()
    assert rows_in(store) == 3 and log.counters.dropped == 1 and log.counters.errors == 1
    store.close()


@pytest.mark.parametrize("fsync", [False, True])
def test_spool_segments_rotate_and_release(tmp_path: Path, fsync: bool) -> None:
    spool = RowSpool(tmp_path, segment_rows=5, fsync=fsync)
    seqs = [spool.append({"id": str(i)}) for i in range(12)]
    assert len(list(tmp_path.glob("*.jsonl"))) == 3
    spool.release(seqs[4])  # the first segment is all written
    assert len(list(tmp_path.glob("*.jsonl"))) == 2
    spool.release(seqs[-1])
    assert not list(tmp_path.glob("*.jsonl"))
    spool.close()


def test_a_segment_from_another_version_is_set_aside_and_logging_goes_on(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "00000000000000000001-1.jsonl").write_text('{"id": "x", "unknown_field": 1}\n[]\n')
    store = Store(f"sqlite:///{tmp_path / 'log.db'}")
    log = PredictionLog(store, settings(durable=True, spool_dir=str(spool)))
    assert log.submit(record(1))
    assert log.flush(10)
    log.close()
    assert rows_in(store) == 1 and log.counters.errors >= 1
    assert [p.suffix for p in spool.iterdir()] == [".bad"]
    store.close()


def test_only_transient_failures_are_retried() -> None:
    from sqlalchemy.exc import ProgrammingError

    from ai_photo_detector.persistence.predictions import unreachable

    def sqlite_error(message: str) -> OperationalError:
        import sqlite3

        return OperationalError("INSERT", {}, sqlite3.OperationalError(message))

    assert unreachable(sqlite_error("database is locked"))
    assert unreachable(sqlite_error("database or disk is full"))
    assert not unreachable(sqlite_error("table predictions has no column named provenance"))
    assert unreachable(OperationalError("connect", {}, ConnectionRefusedError("down")))
    assert not unreachable(ProgrammingError("INSERT", {}, Exception("no such column")))
    assert unreachable(OSError(28, "No space left on device"))
    assert not unreachable(PermissionError(13, "Permission denied"))

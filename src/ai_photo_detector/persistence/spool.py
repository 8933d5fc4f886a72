"""A local spool of prediction rows, so that rows the database has not yet taken survive a
killed process: the durable mode of the prediction log.

Every row is appended to the current segment file (one JSON line) before it is queued; the
log's writer releases rows once the database holds them, and a segment whose every row is
released is deleted. A segment left behind by a process that died is replayed into the
database on the next start. Each live segment is held under an exclusive ``flock``, released
by the kernel when its process dies however it dies, so two processes sharing a folder never
replay each other's live rows.

Appends go to the operating system without ``fsync`` unless asked: a killed process loses
nothing, a machine losing power may lose the last rows.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

SUFFIX = ".jsonl"
OPENING_SUFFIX = ".opening"  # a new segment until it is locked
STALE_OPENING_S = 60.0


def encode_row(row: dict[str, Any]) -> str:
    """One JSON line: bytes as base64 and datetimes as ISO text, marked so they read back."""
    plain: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, bytes):
            plain[key] = {"b64": base64.b64encode(value).decode()}
        elif isinstance(value, datetime):
            plain[key] = {"time": value.isoformat()}
        else:
            plain[key] = value
    return json.dumps(plain, separators=(",", ":"))


def decode_row(line: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    parsed = json.loads(line)
    if not isinstance(parsed, dict):
        raise ValueError("a spool line is a JSON object")
    for key, value in parsed.items():
        if isinstance(value, dict) and "b64" in value:
            row[key] = base64.b64decode(value["b64"])
        elif isinstance(value, dict) and "time" in value:
            row[key] = datetime.fromisoformat(value["time"])
        else:
            row[key] = value
    return row


@dataclass
class _Segment:
    path: Path
    handle: IO[bytes]
    last_seq: int = 0
    rows: int = 0


class RowSpool:
    """Append-before-queue, release-after-write, replay-after-crash."""

    def __init__(self, folder: str | Path, segment_rows: int = 1000, fsync: bool = False) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.segment_rows = segment_rows
        self.fsync = fsync
        self._lock = threading.Lock()
        self._seq = 0
        self._released = 0
        self._current: _Segment | None = None
        self._closed: list[_Segment] = []  # full segments waiting for their rows' release

    # --- the live process's rows -----------------------------------------------------------

    def append(self, row: dict[str, Any]) -> int:
        """Write a row; its sequence number, for :meth:`release`. Raises OSError when the
        disk refuses (the caller counts the row as dropped)."""
        line = (encode_row(row) + "\n").encode()
        with self._lock:
            segment = self._current or self._open()
            fd = segment.handle.fileno()
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(line)
                while view:  # unbuffered: a short write on a full disk is seen at once
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
            except OSError:  # no half line may stay to spoil the next one
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
            self._seq += 1
            segment.last_seq = self._seq
            segment.rows += 1
            if segment.rows >= self.segment_rows:
                self._closed.append(segment)
                self._current = None
            return self._seq

    def release(self, through: int) -> None:
        """Rows up to sequence ``through`` are in the database (or dropped and counted):
        delete the segments that hold nothing else."""
        with self._lock:
            self._released = max(self._released, through)
            for segment in [s for s in self._closed if s.last_seq <= self._released]:
                self._delete(segment)
                self._closed.remove(segment)
            current = self._current
            if current is not None and current.rows and current.last_seq <= self._released:
                self._delete(current)  # idle and fully written: start afresh
                self._current = None

    def close(self) -> None:
        """Stop appending; unreleased segments stay on disk for the next start to replay."""
        with self._lock:
            for segment in [*self._closed, *([self._current] if self._current else [])]:
                if segment.last_seq <= self._released:
                    self._delete(segment)
                else:
                    segment.handle.close()  # also drops the flock
            self._closed, self._current = [], None

    def _open(self) -> _Segment:
        # Locked under a name replay never looks at, then renamed (the lock stays with the
        # file): a replay listing the folder between the open and the lock would otherwise
        # take the live segment for an orphan, write its rows twice and delete it.
        path = self.folder / f"{time.time_ns():020d}-{os.getpid()}{SUFFIX}"
        opening = path.with_suffix(OPENING_SUFFIX)
        handle = opening.open("ab", buffering=0)
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        opening.rename(path)
        self._current = _Segment(path, handle)
        return self._current

    @staticmethod
    def _delete(segment: _Segment) -> None:
        segment.handle.close()
        segment.path.unlink(missing_ok=True)

    # --- what an earlier process left ------------------------------------------------------

    def orphans(self) -> Iterator[Path]:
        """Segments no live process holds, oldest first.

        Each is yielded while this spool holds its lock, until the caller asks for the next:
        two processes starting together never replay the same segment.
        """
        self._remove_stale_openings()
        live = {s.path for s in [*self._closed, *([self._current] if self._current else [])]}
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            if path in live:
                continue
            try:
                handle = path.open("r", encoding="utf-8")
            except FileNotFoundError:
                continue  # replayed by another process meanwhile
            with handle:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another process is writing or replaying it
                if path.exists():  # not deleted by a replay that held it before us
                    yield path

    def _remove_stale_openings(self) -> None:
        """A process killed between creating a segment and renaming it leaves an empty
        ``.opening`` file (no row is written before the rename): remove those a minute old
        and unlocked. A fresh one may be another process's, between its open and its lock."""
        for path in self.folder.glob(f"*{OPENING_SUFFIX}"):
            try:
                if time.time() - path.stat().st_mtime < STALE_OPENING_S:
                    continue
                with path.open("rb") as handle:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    path.unlink(missing_ok=True)
            except (BlockingIOError, FileNotFoundError):
                continue  # held, or removed by another process meanwhile


def read_segment(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The rows of a left-behind segment and how many lines were unreadable (a line cut short
    by the kill is the only expected one)."""
    rows, broken = [], 0
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                rows.append(decode_row(line))
            except (ValueError, TypeError):
                broken += 1
    return rows, broken

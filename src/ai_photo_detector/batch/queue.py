"""The job queue: Huey, on a SQLite file by default (one machine, no server) or on Redis when
workers and replicas run apart.

Huey carries messages and nothing else: a message names a chunk (job id, chunk number) and the
store decides whether it still needs work (see ``persistence/jobs.py``), so a message lost or
delivered twice costs time, never a result.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ai_photo_detector.settings import JobsSettings

if TYPE_CHECKING:  # huey (and the redis client it loads) is imported when a queue is made
    from huey import Huey

TASK = "score_chunk"


def _chunk_message(job_id: str, index: int) -> None:
    """Stands for the message's shape; consumers dispatch on its arguments themselves."""


def make_huey(settings: JobsSettings) -> Huey:
    url = settings.queue_url
    if url.startswith(("redis://", "rediss://", "unix://")):
        from huey import PriorityRedisHuey

        return PriorityRedisHuey(settings.queue_name, url=url, results=False)
    if url.startswith("sqlite:///"):
        from huey import SqliteHuey

        path = Path(url[len("sqlite:///") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(settings.queue_name, filename=str(path), results=False)
    raise ValueError(f"jobs.queue_url must be sqlite:///… or redis://…, not {url!r}")


class JobQueue:
    def __init__(self, settings: JobsSettings) -> None:
        self.huey = make_huey(settings)
        self._message = self.huey.task(name=TASK)(_chunk_message)

    def enqueue(self, job_id: str, index: int) -> None:
        self._message(job_id, index)

    def next(self) -> tuple[str, int] | None:
        """The next chunk named on the queue, or None when it is empty."""
        task: Any = self.huey.dequeue()
        if task is None:
            return None
        job_id, index = task.args
        return str(job_id), int(index)

    def pending(self) -> int:
        return int(self.huey.pending_count())

    def flush(self) -> None:
        self.huey.flush()

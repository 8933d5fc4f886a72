"""When to send a request again, and after how long: bounded, jittered, and never sooner than
the server asked (Retry-After on 429 and 503)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Answers that mean "nothing was done, come back later".
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# 429s that a pause does not cure: the key's job quota frees only when its jobs finish.
NOT_CURED_BY_WAITING = frozenset({"job_limit"})


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` sends in all, and no retry that would end past ``max_elapsed_s``.

    Back-off is "full jitter" (a uniform draw up to base × 2^attempt, capped), so clients
    refused together do not come back together; a Retry-After is a floor, plus a little jitter.
    """

    max_attempts: int = 5
    backoff_base_s: float = 0.25
    backoff_cap_s: float = 10.0
    max_elapsed_s: float = 60.0
    max_retry_after_s: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        jitter = random.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * 2**attempt))
        if retry_after is None:
            return jitter
        return min(retry_after, self.max_retry_after_s) + jitter * 0.1

    def next_delay(self, attempt: int, elapsed_s: float, retry_after: float | None) -> float | None:
        """Seconds to wait before send ``attempt + 1`` (0-based), or None to give up."""
        if attempt + 1 >= self.max_attempts:
            return None
        if retry_after is not None and retry_after > self.max_retry_after_s:
            return None  # told to come back later than we wait: report it instead
        wait = self.delay(attempt, retry_after)
        if elapsed_s + wait > self.max_elapsed_s:
            return None
        return wait

    def retries_answer(self, status: int, code: str | None) -> bool:
        return status in RETRY_STATUSES and code not in NOT_CURED_BY_WAITING


NO_RETRY = RetryPolicy(max_attempts=1)

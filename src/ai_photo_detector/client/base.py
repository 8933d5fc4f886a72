"""What the sync and async clients share: where the service is, the key, timeouts, the retry
policy, and the retry decision for each outcome of a send."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from ai_photo_detector import __version__
from ai_photo_detector.client.calls import Call, error_code, raise_for_error
from ai_photo_detector.client.errors import TransportError
from ai_photo_detector.client.retry import RetryPolicy, parse_retry_after

T = TypeVar("T")
KEY_ENV = "APD_API_KEY"
KEY_FILE_ENV = "APD_API_KEY_FILE"
# Connecting is quick or the host is down; scoring a large photo under load can take seconds.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# Sending again is safe for these whatever the call: the request never reached the server.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def api_key_from_environment() -> str | None:
    """``APD_API_KEY``, else the file named by ``APD_API_KEY_FILE`` (a mounted secret)."""
    key = os.environ.get(KEY_ENV, "").strip()
    if key:
        return key
    path = os.environ.get(KEY_FILE_ENV, "").strip()
    return read_key_file(Path(path)) if path else None


def read_key_file(path: Path) -> str | None:
    """A key kept in a file (a mounted secret): its content, surrounding whitespace dropped."""
    return path.read_text(encoding="utf-8").strip() or None


@dataclass(frozen=True)
class ClientConfig:
    base_url: str
    api_key: str | None
    timeout: httpx.Timeout
    retry: RetryPolicy

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"ai-photo-detector-client/{__version__}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


def config(
    base_url: str,
    api_key: str | None,
    timeout: float | httpx.Timeout | None,
    retry: RetryPolicy | None,
) -> ClientConfig:
    if timeout is None:
        chosen = DEFAULT_TIMEOUT
    elif isinstance(timeout, httpx.Timeout):
        chosen = timeout
    else:
        chosen = httpx.Timeout(timeout, connect=min(5.0, timeout))
    return ClientConfig(
        base_url.rstrip("/"),
        api_key if api_key is not None else api_key_from_environment(),
        chosen,
        retry or RetryPolicy(),
    )


def delay_after_answer(
    policy: RetryPolicy, response: httpx.Response, attempt: int, elapsed_s: float
) -> float | None:
    """Seconds to wait before sending again, or None when this answer is final."""
    if not policy.retries_answer(response.status_code, error_code(response)):
        return None
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return policy.next_delay(attempt, elapsed_s, retry_after)


def delay_after_failure(
    policy: RetryPolicy, call: Call[Any], exc: httpx.TransportError, attempt: int, elapsed: float
) -> float:
    """Seconds to wait after a send that got no answer; raises when it must not be resent."""
    delay = None
    if isinstance(exc, NOT_SENT) or call.idempotent:
        delay = policy.next_delay(attempt, elapsed, None)
    if delay is None:
        raise TransportError(f"{call.method} {call.path}: {type(exc).__name__}: {exc}") from exc
    return delay


def final(call: Call[T], response: httpx.Response) -> T:
    raise_for_error(response)
    return call.read(response)

"""The real server process: start to ready, and graceful shutdown on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

from helpers import encode, smooth_image


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(
    bundle_dir: Path, port: int, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "APD_MODEL": str(bundle_dir), "APD_SERVER__PORT": str(port)}
    env.update(extra_env or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "ai_photo_detector.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("server never became ready")


def _refused_within(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=1)
        except httpx.ConnectError:
            return True
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return False


def test_sigterm_lets_in_flight_requests_finish(bundle_dir: Path) -> None:
    port = _free_port()
    process = _start(bundle_dir, port)
    photo = encode(smooth_image(np.random.default_rng(0), 1500), "PNG")
    results: list[int] = []
    signalled = threading.Event()

    def body() -> Iterator[bytes]:  # half the photo, then the rest once SIGTERM is sent
        yield photo[: len(photo) // 2]
        signalled.wait(30)
        yield photo[len(photo) // 2 :]

    def call() -> None:
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/predict",
            content=body(),
            headers={"Content-Length": str(len(photo))},
            timeout=60,
        )
        results.append(response.status_code)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()

    def in_flight() -> float:  # the scrape itself counts one
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        line = next(x for x in metrics.splitlines() if x.startswith("apd_http_requests_in_flight "))
        return float(line.split()[1]) - 1

    deadline = time.monotonic() + 30
    while in_flight() < len(threads) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert in_flight() == len(threads)  # every request is in the server when the signal comes
    process.send_signal(signal.SIGTERM)
    assert _refused_within(port, 10)  # the listener is closed: the server took the signal
    signalled.set()  # and only now do the uploads of the six requests in flight finish
    for thread in threads:
        thread.join(timeout=60)
    assert process.wait(timeout=60) == 0
    assert results == [200] * 6


def test_forwarded_for_from_an_untrusted_peer_is_ignored(bundle_dir: Path) -> None:
    """Per-address limits hold against a local client that claims other addresses: only
    rate_limit.trusted_proxies (empty by default) may name the client, not the HTTP server."""
    port = _free_port()
    process = _start(bundle_dir, port, {"APD_RATE_LIMIT__LIMIT": "2/minute"})
    try:
        statuses = [
            httpx.get(
                f"http://127.0.0.1:{port}/v1/models",
                headers={"X-Forwarded-For": f"203.0.113.{i}"},
                timeout=10,
            ).status_code
            for i in range(3)
        ]
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert statuses == [200, 200, 429]


def _post_whole_body(port: int, body: bytes, chunked: bool) -> tuple[int, dict[str, object]]:
    """As Python's urllib (and requests, and most SDKs) do: the whole body, then read the
    answer, with no ``Expect: 100-continue``."""
    import json
    import urllib.error
    import urllib.request

    data: bytes | Iterator[bytes] = body
    if chunked:  # an iterable body goes out with Transfer-Encoding: chunked
        data = (body[i : i + 65536] for i in range(0, len(body), 65536))
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/predict", data=data, headers={"Content-Type": "image/jpeg"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_oversize_bodies_get_their_413_even_from_clients_that_send_everything_first(
    bundle_dir: Path,
) -> None:
    port = _free_port()
    limit = 200_000
    process = _start(bundle_dir, port, {"APD_SERVER__MAX_UPLOAD_BYTES": str(limit)})
    try:
        for chunked in (False, True):
            # 48 MB: far past what the socket buffers hold, so the client is still sending
            # when the server has decided (without draining: "connection reset by peer").
            status, body = _post_whole_body(port, b"\xff" * (48 << 20), chunked)
            assert status == 413, chunked
            assert body["error"]["code"] == "body_too_large"  # type: ignore[index]
    finally:
        process.terminate()
        process.wait(timeout=30)


def _exchange(port: int, data: bytes, wait_s: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        # Refused before all of it was read: the answer is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return answer


def test_request_heads_are_limited_in_size_count_and_time(
    bundle_dir: Path, tiny_dataset: Path
) -> None:
    """httptools has no limit of its own: a head too large or with too many headers is
    refused 431, a head trickling in (or none at all) is answered 408 and closed, and honest
    requests, including large bodies arriving in one read with their head, go through."""
    port = _free_port()
    env = {"APD_SERVER__HEADER_TIMEOUT_S": "1", "APD_SERVER__MAX_HEADERS": "20"}
    process = _start(bundle_dir, port, env)
    try:
        huge = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 300_000 + b"\r\n\r\n"
        assert _exchange(port, huge).startswith(b"HTTP/1.1 431")
        unfinished = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200_000
        assert _exchange(port, unfinished).startswith(b"HTTP/1.1 431")
        many = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"".join(
            b"X-%d: 1\r\n" % i for i in range(30)
        )
        assert _exchange(port, many + b"\r\n").startswith(b"HTTP/1.1 431")
        started = time.monotonic()
        slow = _exchange(port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        assert slow.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 4
        started = time.monotonic()
        assert _exchange(port, b"").startswith(b"HTTP/1.1 408")  # a silent connection too
        assert time.monotonic() - started < 4
        # Honest requests: a small one, a 100 KB upload that arrives whole in one read with
        # its head, and a 2 MB body sent with its head in one write.
        assert httpx.get(f"http://127.0.0.1:{port}/v2/health/live").status_code == 200
        jpeg = sorted((tiny_dataset / "ai").iterdir())[0].read_bytes()
        padded = jpeg + b"\0" * (100_000 - len(jpeg))
        small = (
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(padded)
        )
        for _ in range(3):
            whole = _exchange(port, small + padded)
            assert whole.startswith(b"HTTP/1.1 200 OK"), whole[:200]
        body = jpeg + b"\0" * (2_000_000 - len(jpeg))
        head = (
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        answer = _exchange(port, head + body, wait_s=30)
        assert answer.split(b"\r\n", 1)[0] == b"HTTP/1.1 200 OK", answer[:300]
    finally:
        process.terminate()
        process.wait(30)

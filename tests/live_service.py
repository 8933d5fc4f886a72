"""A real service on a loopback port, in this process: uvicorn serving ``create_app``, for
tests that must cross a socket (the client, webhooks) rather than an in-memory transport."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.settings import Settings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def live_service(
    settings: Settings, start_timeout_s: float = 120.0, port: int | None = None
) -> Iterator[str]:
    """Start the app, yield its base URL, stop it (its lifespan runs both ways)."""
    app = create_app(settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port or free_port(), log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="live-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(60)

"""Run the API with uvicorn: graceful shutdown lets in-flight requests finish on SIGTERM."""

from __future__ import annotations

import signal

import uvicorn

from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.serving.api.protocol import GuardedHttpToolsProtocol
from ai_photo_detector.serving.memory import limit_malloc_arenas
from ai_photo_detector.serving.runtime import check_settings
from ai_photo_detector.settings import Settings


def run_server(settings: Settings) -> None:
    server = settings.server
    if server.workers > 1:
        raise SystemExit(
            "server.workers > 1 is not supported: run one process per container and scale with "
            "replicas (metrics are per process; see README)"
        )
    check_settings(settings)  # a clear error before uvicorn, not a failed start-up
    limit_malloc_arenas(server.malloc_arena_max)  # before any thread allocates
    # uvicorn drains in-flight requests on SIGTERM/SIGINT, then re-raises the signal under the
    # handler that was installed before it started; a no-op one lets the process exit with 0.
    for captured in (signal.SIGTERM, signal.SIGINT):
        signal.signal(captured, lambda *_: None)
    GuardedHttpToolsProtocol.max_header_bytes = server.max_header_bytes
    GuardedHttpToolsProtocol.max_headers = server.max_headers
    GuardedHttpToolsProtocol.header_timeout_s = server.header_timeout_s
    uvicorn.run(
        create_app(settings),
        http=GuardedHttpToolsProtocol,  # httptools, with limits on the request head
        host=server.host,
        port=server.port,
        timeout_graceful_shutdown=int(server.graceful_timeout_s),
        log_level="info",
        access_log=server.access_log,
        # The rate limiter decides which proxies to believe (rate_limit.trusted_proxies): uvicorn's
        # own default would take X-Forwarded-For from any local peer before it looks.
        proxy_headers=False,
    )

"""ASGI middleware: request ids, request metrics and security headers in one pass."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ai_photo_detector.serving.metrics import ServiceMetrics

REQUEST_ID_HEADER = "x-request-id"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
DOCS_PATHS = ("/docs", "/redoc")
# The interactive docs load Swagger UI and ReDoc from their CDN and start them inline.
_CDN = b"https://cdn.jsdelivr.net"
DOCS_SECURITY_HEADERS = [
    *[header for header in SECURITY_HEADERS if header[0] != b"content-security-policy"],
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'unsafe-inline' "
        + _CDN
        + b"; style-src 'unsafe-inline' "
        + _CDN
        + b" https://fonts.googleapis.com; font-src https://fonts.gstatic.com; "
        b"img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
        b"connect-src 'self'; worker-src blob:; base-uri 'none'; frame-ancestors 'none'",
    ),
]
UI_PATH = "/ui"
# The review page runs its own script and style and shows overlays as data: images; nothing
# else, and it calls this origin only.
UI_SECURITY_HEADERS = [
    *[header for header in SECURITY_HEADERS if header[0] != b"content-security-policy"],
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
]


def request_id_of(scope: Scope) -> str:
    state: dict[str, Any] = scope.setdefault("state", {})
    return str(state.get("request_id", ""))


REGION_HEADER = "X-APD-Region"


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, region: str | None = None) -> None:
        self.app = app
        self.metrics = metrics
        # Which region answered: for clients and the global front's logs (several regions).
        self.region_header = [(REGION_HEADER.encode(), region.encode())] if region else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = incoming if _CLIENT_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        path = scope["path"]
        if path.startswith(DOCS_PATHS):
            security = DOCS_SECURITY_HEADERS
        elif path.startswith(UI_PATH):
            security = UI_SECURITY_HEADERS
        else:
            security = SECURITY_HEADERS

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                headers.extend(security)
                headers.extend(self.region_header)
                message["headers"] = headers
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.request_duration.labels(method, template).observe(
                time.perf_counter() - started
            )

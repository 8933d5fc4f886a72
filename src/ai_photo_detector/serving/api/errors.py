"""One error shape for every failure: {"error": {"code", "message", "request_id"}}.

The one place where errors become HTTP: the core raises :mod:`ai_photo_detector.errors`
classes, which :data:`STATUS` maps to a status; what only HTTP can get wrong (keys, request
shape, body size) is an :class:`ApiError` that carries its own.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ai_photo_detector.errors import (
    BundleInvalid,
    DatasetInvalid,
    DetectorError,
    ExplanationUnavailable,
    InputError,
    JobConflict,
    JobLimitReached,
    JobNotFound,
    JobsUnavailable,
    ModelNotFound,
    ModelNotReady,
    NotInRegion,
    Overloaded,
    RegionUnavailable,
    RegistryUnavailable,
    ReloadFailed,
    ShuttingDown,
    StoreUnavailable,
)
from ai_photo_detector.serving.api.middleware import request_id_of

logger = logging.getLogger(__name__)


class ApiError(DetectorError):
    """An error of the HTTP exchange itself, with its status (and headers, e.g. Retry-After)."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, code)
        self.status = status
        self.headers = headers or {}


# Domain errors -> HTTP status, most specific class first.
STATUS: tuple[tuple[type[DetectorError], int], ...] = (
    (ModelNotFound, 404),
    (JobNotFound, 404),
    (JobConflict, 409),
    (JobLimitReached, 429),
    (JobsUnavailable, 503),
    (ExplanationUnavailable, 409),
    (ReloadFailed, 422),
    (BundleInvalid, 422),
    (DatasetInvalid, 422),
    (Overloaded, 503),
    (ModelNotReady, 503),
    (ShuttingDown, 503),
    (StoreUnavailable, 503),
    (RegionUnavailable, 503),
    (NotInRegion, 404),
    (RegistryUnavailable, 503),
    (InputError, 422),
)
# Input problems (image and archive codes) whose status is not 422.
IMAGE_STATUS = {
    "empty_body": 400,
    "unsupported_format": 415,
    "image_too_large": 413,
    "archive_unsupported": 415,
    "path_outside_roots": 403,
}
# Refusals a client should retry after a pause.
RETRY_LATER = (Overloaded, ModelNotReady, ShuttingDown, StoreUnavailable, RegionUnavailable)


def http_status(exc: DetectorError) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, InputError) and exc.code in IMAGE_STATUS:
        return IMAGE_STATUS[exc.code]
    return next((status for kind, status in STATUS if isinstance(exc, kind)), 500)


_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def error_response(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "request_id": request_id_of(request.scope)}}
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    @app.exception_handler(DetectorError)
    async def detector_error(request: Request, exc: DetectorError) -> JSONResponse:
        headers = dict(exc.headers) if isinstance(exc, ApiError) else {}
        if isinstance(exc, RETRY_LATER):
            headers.setdefault("Retry-After", str(retry_after_s))
        status = http_status(exc)
        if status == 500:
            logger.error("unmapped error %s: %s", type(exc).__name__, exc.message)
        return error_response(request, status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"invalid request: {where}: {first.get('msg', 'invalid value')}"
        return error_response(request, 422, "invalid_request", message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(
            request, exc.status_code, code, str(exc.detail), dict(exc.headers or {})
        )

    async def store_down(request: Request, exc: Exception) -> JSONResponse:
        # The database cannot be reached or answers with an error: nothing was stored, and
        # the client may try again (a write that was acknowledged never lands here).
        logger.warning("store error on %s: %s", request.scope["path"], exc)
        message = "the store cannot be reached; nothing was stored, try again"
        headers = {"Retry-After": str(retry_after_s)}
        return error_response(request, 503, "store_unavailable", message, headers)

    for unreachable in (OperationalError, InterfaceError):  # not integrity errors: those are bugs
        app.add_exception_handler(unreachable, store_down)

    @app.exception_handler(ClientDisconnect)
    async def client_left(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client went away mid-upload: nobody reads this answer, and it is no server
        # error (499, as nginx counts it), so it neither logs a traceback nor feeds 5xx alerts.
        return error_response(request, 499, "client_disconnected", "the client disconnected")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=exc)
        return error_response(request, 500, "internal_error", "an unexpected error occurred")

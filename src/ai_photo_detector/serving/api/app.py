"""The app factory: settings in, a ready FastAPI app out; all state lives on ``app.state``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from ai_photo_detector.contract import API_VERSION
from ai_photo_detector.serving.api.auth import AnyKeyCaller
from ai_photo_detector.serving.api.errors import install_error_handlers
from ai_photo_detector.serving.api.middleware import UI_PATH, ServiceMiddleware
from ai_photo_detector.serving.api.ratelimit import RateLimiter
from ai_photo_detector.serving.api.routes import (
    admin,
    compat,
    explain,
    health,
    jobs,
    models,
    monitoring,
    ops,
    predict,
    review,
)
from ai_photo_detector.serving.metrics import ServiceMetrics
from ai_photo_detector.serving.runtime import running
from ai_photo_detector.settings import Settings

UI_FOLDER = Path(__file__).resolve().parents[1] / "ui"  # static files, shipped in the package
logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running(settings, metrics) as runtime:
            app.state.services = runtime
            app.state.rate_limiter = RateLimiter(settings.rate_limit, metrics)
            for model in runtime.models.roles.values():
                logger.info("serving %s %s as %s", model.name, model.version, model.role)
            yield

    server = settings.server
    docs = server.docs == "on" or (server.docs == "auto" and not settings.auth_required)
    app = FastAPI(
        title="AI Product Photo Detector",
        version=API_VERSION,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        description="Detects AI-generated product photos. Errors always have the shape "
        '`{"error": {"code", "message", "request_id"}}`.',
        lifespan=lifespan,
    )
    install_error_handlers(app, settings.server.retry_after_s)
    app.include_router(predict.router)
    app.include_router(explain.router)
    app.include_router(jobs.router)
    app.include_router(review.router)
    app.include_router(models.router)
    app.include_router(monitoring.router)
    app.include_router(ops.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    if settings.server.compat_v1:  # the original v1.0 API, a migration aid
        app.include_router(compat.router)
    if not docs:  # the schema still answers, to a valid key only

        @app.get("/openapi.json", include_in_schema=False)
        async def openapi(_: AnyKeyCaller) -> JSONResponse:
            return JSONResponse(app.openapi())

    if settings.server.ui:
        app.mount(UI_PATH, StaticFiles(directory=UI_FOLDER, html=True), name="ui")
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "Content-Type",
                "X-Request-ID",
                "Idempotency-Key",
            ],
            expose_headers=["X-Request-ID", "Retry-After", "Location"],
        )
    app.add_middleware(ServiceMiddleware, metrics=metrics, region=settings.region.name)
    return app

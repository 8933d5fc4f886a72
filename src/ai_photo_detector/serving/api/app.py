"""The app factory: settings in, a ready FastAPI app out; all state lives on ``app.state``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from ai_photo_detector import __version__
from ai_photo_detector.serving.api.errors import install_error_handlers
from ai_photo_detector.serving.api.middleware import ServiceMiddleware
from ai_photo_detector.serving.api.ratelimit import RateLimiter
from ai_photo_detector.serving.api.routes import health, models, predict
from ai_photo_detector.serving.api.state import Services
from ai_photo_detector.serving.metrics import ServiceMetrics
from ai_photo_detector.serving.models import ModelManager
from ai_photo_detector.settings import Settings

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services(
            settings=settings,
            models=ModelManager(settings),
            metrics=metrics,
            decode_pool=ThreadPoolExecutor(
                max_workers=settings.server.decode_threads, thread_name_prefix="decode"
            ),
            rate_limiter=RateLimiter(settings.rate_limit, metrics),
        )
        app.state.services = services
        loaded = services.models.load(settings.model)
        manifest = loaded.bundle.manifest
        metrics.model_info.labels(loaded.name).info(
            {
                "version": manifest.version,
                "backbone": manifest.backbone,
                "labels": ",".join(manifest.labels),
            }
        )
        services.models.start()
        metrics.model_ready.labels(loaded.name).set(1)
        logger.info("serving %s %s from %s", loaded.name, loaded.version, settings.model)
        try:
            yield
        finally:
            services.draining = True
            metrics.model_ready.labels(loaded.name).set(0)
            await services.models.stop()
            services.decode_pool.shutdown(wait=True)

    app = FastAPI(
        title="AI Product Photo Detector",
        version=__version__,
        description="Detects AI-generated product photos. Errors always have the shape "
        '`{"error": {"code", "message", "request_id"}}`.',
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(models.router)
    app.include_router(health.router)
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(ServiceMiddleware, metrics=metrics)
    return app

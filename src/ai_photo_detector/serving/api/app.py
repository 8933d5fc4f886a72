"""The app factory: settings in, a ready FastAPI app out; all state lives on ``app.state``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from ai_photo_detector import __version__
from ai_photo_detector.monitoring.prediction_log import PredictionLog
from ai_photo_detector.monitoring.store import Store
from ai_photo_detector.serving.api.errors import install_error_handlers
from ai_photo_detector.serving.api.middleware import ServiceMiddleware
from ai_photo_detector.serving.api.ratelimit import RateLimiter
from ai_photo_detector.serving.api.routes import health, models, monitoring, predict
from ai_photo_detector.serving.api.state import Services
from ai_photo_detector.serving.metrics import PredictionLogCollector, ServiceMetrics
from ai_photo_detector.serving.models import ModelManager
from ai_photo_detector.serving.monitor import Monitor
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
            store=Store(settings.database_url),  # applies pending migrations
        )
        if settings.prediction_log.enabled and services.store is not None:
            services.prediction_log = PredictionLog(services.store, settings.prediction_log)
            metrics.registry.register(PredictionLogCollector(services.prediction_log))
        if services.store is not None:
            services.monitor = Monitor(settings, services.store, services.models, metrics)
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
        if services.monitor is not None:
            services.monitor.start()
        metrics.model_ready.labels(loaded.name).set(1)
        logger.info("serving %s %s from %s", loaded.name, loaded.version, settings.model)
        try:
            yield
        finally:
            services.draining = True
            metrics.model_ready.labels(loaded.name).set(0)
            if services.monitor is not None:
                await services.monitor.stop()
            await services.models.stop()
            services.decode_pool.shutdown(wait=True)
            if services.prediction_log is not None:
                services.prediction_log.close()
            if services.store is not None:
                services.store.close()

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
    app.include_router(monitoring.router)
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

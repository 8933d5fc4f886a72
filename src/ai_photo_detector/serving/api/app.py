"""The app factory: settings in, a ready FastAPI app out; all state lives on ``app.state``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from ai_photo_detector import __version__
from ai_photo_detector.monitoring.prediction_log import PredictionLog
from ai_photo_detector.monitoring.store import Store
from ai_photo_detector.serving.api.errors import install_error_handlers
from ai_photo_detector.serving.api.middleware import UI_PATH, ServiceMiddleware
from ai_photo_detector.serving.api.ratelimit import RateLimiter
from ai_photo_detector.serving.api.routes import (
    admin,
    explain,
    health,
    models,
    monitoring,
    predict,
)
from ai_photo_detector.serving.api.state import Services, publish_models
from ai_photo_detector.serving.metrics import PredictionLogCollector, ServiceMetrics
from ai_photo_detector.serving.models import CHALLENGER, CHAMPION, ModelManager
from ai_photo_detector.serving.monitor import Monitor
from ai_photo_detector.serving.predictor import Scorer
from ai_photo_detector.serving.rollout import Rollout
from ai_photo_detector.serving.spare_time import SpareTimeExecutor
from ai_photo_detector.serving.warm_pool import WarmThreadPool
from ai_photo_detector.settings import Settings

UI_FOLDER = Path(__file__).resolve().parents[1] / "ui"  # static files, shipped in the package
logger = logging.getLogger(__name__)


async def _stop_models(services: Services) -> None:
    await services.models.stop()
    publish_models(services)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Every resource's clean-up is registered as soon as it exists and runs in reverse
        # order, also when start-up fails half-way or one clean-up step raises.
        async with AsyncExitStack() as cleanup:
            store = Store(settings.database_url)  # applies pending migrations
            cleanup.callback(store.close)
            prediction_log = None
            if settings.prediction_log.enabled:
                prediction_log = PredictionLog(store, settings.prediction_log)
                cleanup.callback(prediction_log.close)  # after the rows are made
                metrics.registry.register(PredictionLogCollector(prediction_log))
            models = ModelManager(settings)
            decode_pool = WarmThreadPool(settings.server.decode_threads, "decode")
            side_pool = WarmThreadPool(settings.server.decode_threads, "beside-decode")
            spare_time = SpareTimeExecutor()
            services = Services(
                settings=settings,
                models=models,
                metrics=metrics,
                decode_pool=decode_pool,
                side_pool=side_pool,
                spare_time=spare_time,
                rate_limiter=RateLimiter(settings.rate_limit, metrics),
                scorer=Scorer(
                    limits=models.limits,
                    metrics=metrics,
                    decode_pool=decode_pool,
                    side_pool=side_pool,
                    spare_time=spare_time,
                    prediction_log=prediction_log,
                    store_images=settings.prediction_log.store_images,
                ),
                store=store,
                prediction_log=prediction_log,
            )
            cleanup.callback(services.spare_time.shutdown)
            # Models stop once no decode job can reach their batchers any more.
            cleanup.push_async_callback(_stop_models, services)
            cleanup.callback(services.side_pool.shutdown)
            cleanup.callback(services.decode_pool.shutdown)
            services.monitor = Monitor(settings, store, services.models, metrics)
            app.state.services = services
            services.models.load(settings.model, CHAMPION)
            if settings.rollout.challenger:
                services.models.load(settings.rollout.challenger, CHALLENGER)
            services.rollout = Rollout(settings, models, metrics, services.scorer, store)
            services.monitor.rollout = services.rollout
            services.models.start()
            publish_models(services)
            services.monitor.start()
            cleanup.push_async_callback(services.monitor.stop)
            cleanup.push_async_callback(services.rollout.drain)  # shadow work in flight
            if settings.registry.poll_interval_s > 0:
                poller = asyncio.get_running_loop().create_task(
                    services.models.poll_aliases(settings.registry.poll_interval_s)
                )
                cleanup.callback(poller.cancel)
            cleanup.callback(setattr, services, "draining", True)
            for model in services.models.roles.values():
                logger.info("serving %s %s as %s", model.name, model.version, model.role)
            yield

    app = FastAPI(
        title="AI Product Photo Detector",
        version=__version__,
        description="Detects AI-generated product photos. Errors always have the shape "
        '`{"error": {"code", "message", "request_id"}}`.',
        lifespan=lifespan,
    )
    install_error_handlers(app, settings.server.retry_after_s)
    app.include_router(predict.router)
    app.include_router(explain.router)
    app.include_router(models.router)
    app.include_router(monitoring.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    if settings.server.ui:
        app.mount(UI_PATH, StaticFiles(directory=UI_FOLDER, html=True), name="ui")
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

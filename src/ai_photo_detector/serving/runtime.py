"""The composition root: every component of a running service, built from settings in order and
stopped in reverse order, also when start-up fails half-way.

Nothing here knows HTTP: the app (``serving/api``) receives a :class:`Runtime`, and so can any
other front end. A new component is one field and its lines in :func:`running`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from ai_photo_detector.batch.callbacks import Webhooks, secret_lookup
from ai_photo_detector.batch.metrics import JobStoreCollector
from ai_photo_detector.batch.queue import JobQueue
from ai_photo_detector.batch.service import JobService
from ai_photo_detector.errors import SettingsInvalid
from ai_photo_detector.persistence.callbacks import CallbackStore
from ai_photo_detector.persistence.jobs import JobStore
from ai_photo_detector.persistence.predictions import PredictionLog
from ai_photo_detector.persistence.store import Store
from ai_photo_detector.serving.job_worker import WorkerProcess
from ai_photo_detector.serving.keyring import KeyRing
from ai_photo_detector.serving.metrics import PredictionLogCollector, ServiceMetrics
from ai_photo_detector.serving.models import CHALLENGER, CHAMPION, ModelManager
from ai_photo_detector.serving.monitor import Monitor
from ai_photo_detector.serving.periodic import Periodic
from ai_photo_detector.serving.predictor import Scorer
from ai_photo_detector.serving.regions import Peers
from ai_photo_detector.serving.retraining import Retrainer
from ai_photo_detector.serving.rollout import Rollout
from ai_photo_detector.serving.spare_time import SpareTimeExecutor
from ai_photo_detector.serving.warm_pool import WarmThreadPool
from ai_photo_detector.settings import Settings


@dataclass(kw_only=True)
class Runtime:
    settings: Settings
    metrics: ServiceMetrics
    keyring: KeyRing
    peers: Peers  # the other regions (none by default)
    store: Store
    prediction_log: PredictionLog | None  # None when prediction_log.enabled is off
    models: ModelManager
    decode_pool: WarmThreadPool  # decode and preprocess
    side_pool: WarmThreadPool  # work beside each decode: the markup scan
    spare_time: SpareTimeExecutor  # work after the answer: the prediction log's rows
    scorer: Scorer
    rollout: Rollout
    monitor: Monitor
    retrainer: Retrainer
    jobs: JobService | None = None  # None when jobs.enabled is off
    job_worker: WorkerProcess | None = None  # the worker process beside it (jobs.in_process)
    draining: bool = False  # set first on shutdown: new work is refused from then on

    def publish_models(self) -> None:
        """Model info, readiness and canary gauges; at start and after a reload."""
        publish_models(self.metrics, self.models, self.rollout.canary_weight)


def publish_models(metrics: ServiceMetrics, models: ModelManager, canary_weight: float) -> None:
    for role in (CHAMPION, CHALLENGER):
        model = models.roles.get(role)
        if model is None:
            continue
        manifest = model.bundle.manifest
        metrics.model_info.labels(role, model.name).info(
            {
                "version": manifest.version,
                "backbone": manifest.backbone,
                "labels": ",".join(manifest.labels),
            }
        )
        metrics.model_ready.labels(role, model.name).set(float(model.ready))
    metrics.canary_weight.set(canary_weight)


async def _start_jobs(
    settings: Settings,
    store: Store,
    metrics: ServiceMetrics,
    keyring: KeyRing,
    cleanup: AsyncExitStack,
) -> tuple[JobService, WorkerProcess | None]:
    job_store = JobStore(store, settings.region.name)
    queue = JobQueue(settings.jobs)
    collector = JobStoreCollector(job_store)
    metrics.registry.register(collector)
    cleanup.callback(metrics.registry.unregister, collector)  # the app may start again
    webhooks = None
    if settings.webhooks.enabled:
        secret_for = secret_lookup(settings.webhooks, keyring.entry)
        webhooks = Webhooks(CallbackStore(store), settings.webhooks, secret_for)
    service = JobService(
        job_store,
        queue,
        settings.jobs,
        settings.data.extensions,
        settings.server.max_upload_bytes,
        webhooks,
    )
    worker = None
    if settings.jobs.in_process:
        worker = WorkerProcess(settings)
        worker.start()
        cleanup.push_async_callback(worker.stop)
    purging = Periodic("job retention", 3600.0, lambda: asyncio.to_thread(service.purge))
    purging.start()
    cleanup.push_async_callback(purging.stop)
    if webhooks is not None:
        delivering = Periodic(
            "job webhooks",
            settings.webhooks.poll_interval_s,
            lambda: asyncio.to_thread(service.deliver_webhooks),
        )
        delivering.start()
        cleanup.push_async_callback(delivering.stop)
    return service, worker


async def _stop_models(models: ModelManager, metrics: ServiceMetrics) -> None:
    await models.stop()
    publish_models(metrics, models, 0.0)  # not ready, no canary: the gauges say so


def check_settings(settings: Settings) -> None:
    """Refuse what would start a service that cannot work: production mode with no API key
    would report ready and then answer every call 401."""
    if settings.auth_required and not settings.auth.keys and not settings.auth.keys_file:
        raise SettingsInvalid(
            "API keys are required (environment=production or auth.mode=required) but none are "
            "configured: add auth.keys or auth.keys_file (`ai-photo-detector keys create`), or set "
            "auth.mode=disabled deliberately"
        )


def open_keyring(settings: Settings) -> KeyRing:
    try:
        return KeyRing(settings.auth)
    except (OSError, ValueError) as exc:  # an unreadable or invalid keys file at start
        raise SettingsInvalid(f"auth.keys_file {settings.auth.keys_file}: {exc}") from exc


@asynccontextmanager
async def running(settings: Settings, metrics: ServiceMetrics) -> AsyncIterator[Runtime]:
    """Build, start, yield, then stop every component (each clean-up registered as soon as
    its component exists, run in reverse order even if one of them raises)."""
    check_settings(settings)
    keyring = open_keyring(settings)
    async with AsyncExitStack() as cleanup:
        store = Store(settings.database_url)  # applies pending migrations
        cleanup.callback(store.close)
        prediction_log = None
        if settings.prediction_log.enabled:
            prediction_log = PredictionLog(store, settings.prediction_log)
            cleanup.callback(prediction_log.close)  # after the last rows are made
            log_collector = PredictionLogCollector(prediction_log)
            metrics.registry.register(log_collector)
            cleanup.callback(metrics.registry.unregister, log_collector)
        spare_time = SpareTimeExecutor()
        cleanup.callback(spare_time.shutdown)
        models = ModelManager(settings)
        # Models stop once no decode job can reach their batchers any more.
        cleanup.push_async_callback(_stop_models, models, metrics)
        decode_pool = WarmThreadPool(settings.server.decode_threads, "decode")
        side_pool = WarmThreadPool(settings.server.decode_threads, "beside-decode")
        cleanup.callback(side_pool.shutdown)
        cleanup.callback(decode_pool.shutdown)
        models.load(settings.model, CHAMPION)
        if settings.rollout.challenger:
            models.load(settings.rollout.challenger, CHALLENGER)
        scorer = Scorer(
            limits=models.limits,
            metrics=metrics,
            decode_pool=decode_pool,
            side_pool=side_pool,
            spare_time=spare_time,
            prediction_log=prediction_log,
            store_images=settings.prediction_log.store_images,
            region=settings.region.name,
        )
        rollout = Rollout(settings, models, metrics, scorer, store)
        runtime = Runtime(
            settings=settings,
            metrics=metrics,
            keyring=keyring,
            peers=Peers(settings.region),
            store=store,
            prediction_log=prediction_log,
            models=models,
            decode_pool=decode_pool,
            side_pool=side_pool,
            spare_time=spare_time,
            scorer=scorer,
            rollout=rollout,
            monitor=Monitor(settings, store, models, metrics, rollout),
            retrainer=Retrainer(settings, store, models, rollout, lambda: runtime.publish_models()),
        )
        cleanup.push_async_callback(runtime.retrainer.stop)
        models.start()
        if settings.jobs.enabled:
            runtime.jobs, runtime.job_worker = await _start_jobs(
                settings, store, metrics, keyring, cleanup
            )
        runtime.publish_models()
        runtime.monitor.start()
        cleanup.push_async_callback(runtime.monitor.stop)
        cleanup.push_async_callback(rollout.drain)  # shadow work in flight
        if settings.registry.poll_interval_s > 0:
            polling = Periodic(
                "registry alias polling", settings.registry.poll_interval_s, models.follow_aliases
            )
            polling.start()
            cleanup.push_async_callback(polling.stop)
        cleanup.callback(setattr, runtime, "draining", True)
        yield runtime

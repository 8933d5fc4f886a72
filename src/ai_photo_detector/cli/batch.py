"""Batch commands: ``worker`` works queued jobs off; ``score`` scores folders, manifests and
storage prefixes straight to a results file, on this machine or on a Ray cluster."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from ai_photo_detector.cli.common import ConfigOption, console, load, opened_store
from ai_photo_detector.errors import ModelNotFound
from ai_photo_detector.settings import Settings


class WorkerDetectors:
    """The worker's models, by name: the configured champion and challenger bundles."""

    def __init__(self, settings: Settings) -> None:
        from ai_photo_detector.model.inference import OnnxDetector
        from ai_photo_detector.registry.registry import resolve_bundle

        self.detectors: dict[str, Any] = {}
        roles = {"champion": settings.model, "challenger": settings.rollout.challenger}
        for role, reference in roles.items():
            if not reference:
                continue
            bundle = resolve_bundle(reference, settings).bundle
            detector = OnnxDetector(bundle, 1, 1, "never", lanes=False)
            manifest = bundle.manifest
            for name in (role, manifest.name, f"{manifest.name}@{manifest.version}"):
                self.detectors.setdefault(name, detector)

    def __call__(self, name: str) -> Any:
        detector = self.detectors.get(name)
        if detector is None:
            raise ModelNotFound(f"this worker does not hold model {name!r}")
        return detector


def idle_priority() -> None:
    """This process, and the threads it starts from now on (ONNX Runtime's too), get the CPU
    only when nothing else wants it; where SCHED_IDLE is missing, the lowest nice level."""
    import os

    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


def worker(
    threads: Annotated[
        int | None, typer.Option(help="Chunks worked on at once (default: jobs.threads).")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port.")
    ] = None,
    idle: Annotated[
        bool, typer.Option(help="Run only when the CPU has nothing else to do (SCHED_IDLE).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Work queued jobs off until SIGTERM or Ctrl-C (a chunk in progress is finished)."""
    if idle:
        idle_priority()
    from prometheus_client import CollectorRegistry, start_http_server

    from ai_photo_detector.batch.metrics import JobMetrics, JobStoreCollector
    from ai_photo_detector.batch.queue import JobQueue
    from ai_photo_detector.batch.worker import ChunkRunner, Consumer, worker_threads
    from ai_photo_detector.imaging import upload_limits
    from ai_photo_detector.persistence.jobs import JobStore

    settings = load(config)
    detectors = WorkerDetectors(settings)
    with opened_store(settings, write=True) as store:
        jobs = JobStore(store)
        registry = CollectorRegistry()
        metrics = JobMetrics(registry)
        if metrics_port is not None:
            registry.register(JobStoreCollector(jobs))
            start_http_server(metrics_port, registry=registry)
        runner = ChunkRunner(
            jobs,
            settings.jobs,
            detectors,
            upload_limits(settings),
            settings.server.max_upload_bytes,
            metrics,
        )
        count = threads or worker_threads(settings.jobs)
        consumer = Consumer(JobQueue(settings.jobs), runner, count)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        consumer.start()
        console.print(
            f"worker: {count} thread(s) on {settings.jobs.queue_url}, models "
            + ", ".join(sorted(n for n in detectors.detectors if "@" in n))
        )
        stop.wait()
        console.print("worker: stopping after the chunks in progress")
        consumer.stop()


def score(
    sources: Annotated[
        list[str], typer.Argument(help="Folders, manifest files or storage prefixes (s3://…/).")
    ],
    out: Annotated[Path, typer.Option(help="Results file: .parquet, .csv or .jsonl.")],
    engine: Annotated[str, typer.Option(help="local (this machine) or ray.")] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: a local Ray instance).")
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Threads (local) or actors (ray); 0: one per CPU.")
    ] = 0,
    model: Annotated[str | None, typer.Option(help="Bundle folder (default: APD_MODEL).")] = None,
    config: ConfigOption = None,
) -> None:
    """Score every image of the sources into one results file (a row per image: the verdict,
    or an error), on this machine's cores or on a Ray cluster."""
    from ai_photo_detector.batch.engines import ScoreJob, expand_sources, score_local, score_ray
    from ai_photo_detector.batch.results import RowSink
    from ai_photo_detector.cli.common import progress_bars
    from ai_photo_detector.errors import InputError
    from ai_photo_detector.imaging import upload_limits
    from ai_photo_detector.registry.registry import resolve_bundle

    if engine not in ("local", "ray"):
        raise InputError(f"--engine must be local or ray, not {engine!r}")
    try:
        sink = RowSink(out)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    settings = load(config)
    bundle = resolve_bundle(model or settings.model, settings).bundle
    items = expand_sources(sources, settings.data.extensions)
    job = ScoreJob(
        str(bundle.path), items, upload_limits(settings), settings.server.max_upload_bytes
    )
    failed = 0
    with progress_bars() as progress:
        advance = progress(f"scoring ({engine})", len(items))
        if engine == "local":
            pages = score_local(job, workers, advance)
        else:
            pages = score_ray(job, address, workers, advance)

        def counted() -> Any:
            nonlocal failed
            for page in pages:
                failed += sum(1 for row in page if row.get("error_code"))
                yield page

        written = sink.write(counted())
    console.print(f"{written} rows written to {out} ({failed} image(s) could not be scored)")

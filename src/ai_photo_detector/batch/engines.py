"""Scoring many images straight to a results file, for an operator: ``local`` uses every core of
this machine, ``ray`` runs the same scoring on a Ray cluster (``map_batches`` over an actor pool
that holds the ONNX session), so one command scales from a laptop to a cluster.

Sources are folders, manifest files (one path per line, or ``{"paths": [...]}``) and storage
prefixes (``s3://bucket/photos/``, read through fsspec). The operator names them, so no storage
roots apply here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ai_photo_detector.batch.manifests import parse_manifest
from ai_photo_detector.batch.scoring import RESULT_FIELDS, score_items
from ai_photo_detector.errors import InputError
from ai_photo_detector.imaging import DecodeLimits
from ai_photo_detector.model.inference import OnnxDetector
from ai_photo_detector.model.runtimes import available_cpus
from ai_photo_detector.persistence.jobs import Item

PAGE = 32  # images per unit of work


def _is_url(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def expand_sources(sources: list[str], extensions: list[str]) -> list[Item]:
    """Every image the sources name, numbered in order (folders and prefixes sorted)."""
    import fsspec

    allowed = tuple(e.lower() for e in extensions)
    names: list[str] = []
    for source in sources:
        local = Path(source.removeprefix("file://"))
        if not _is_url(source) and local.is_dir():
            names += sorted(
                str(p) for p in local.rglob("*") if p.is_file() and p.suffix.lower() in allowed
            )
        elif not _is_url(source) and local.is_file() and local.suffix.lower() not in allowed:
            names += parse_manifest(local.read_bytes(), 10**9)  # a manifest file
        elif _is_url(source) and source.endswith("/"):
            fs, _, (root,) = fsspec.get_fs_token_paths(source)
            names += sorted(
                fs.unstrip_protocol(p) for p in fs.find(root) if p.lower().endswith(allowed)
            )
        elif _is_url(source) or local.is_file():
            names.append(source)
        else:
            raise InputError(f"{source}: no such folder, file or prefix", "source_not_found")
    if not names:
        raise InputError("the sources hold no images", "no_images")
    return [Item(i, name) for i, name in enumerate(names)]


def read_any(max_bytes: int) -> Callable[[Item], bytes]:
    def read(item: Item) -> bytes:
        import fsspec

        try:
            with fsspec.open(item.name, "rb") as file:
                data: bytes = file.read(max_bytes + 1)
        except FileNotFoundError as exc:
            raise InputError(f"{item.name}: no such file", "not_found") from exc
        if len(data) > max_bytes:
            raise InputError(f"{item.name} is larger than {max_bytes} bytes", "image_too_large")
        return data

    return read


@dataclass(frozen=True)
class ScoreJob:
    bundle: str  # a bundle folder every worker can read
    items: list[Item]
    limits: DecodeLimits
    max_bytes: int


def pages(items: list[Item]) -> list[list[Item]]:
    return [items[i : i + PAGE] for i in range(0, len(items), PAGE)]


def score_local(
    job: ScoreJob,
    threads: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Pages of rows in item order; one single-threaded session shared by ``threads`` threads
    (each decodes and infers its own page), which keeps every core busy."""
    from ai_photo_detector.model.bundle import load_bundle

    detector = OnnxDetector(load_bundle(job.bundle), 1, 1, "never", lanes=False)
    read = read_any(job.max_bytes)

    def work(page: list[Item]) -> list[dict[str, Any]]:
        return score_items(detector, page, read, job.limits)

    with ThreadPoolExecutor(max_workers=threads or available_cpus()) as pool:
        for rows in pool.map(work, pages(job.items)):
            if on_progress is not None:
                on_progress(len(rows))
            yield rows


class _RayScorer:
    """A Ray actor: opens the bundle once, then scores batches of (item, name)."""

    def __init__(self, job: ScoreJob) -> None:
        from ai_photo_detector.model.bundle import load_bundle

        self.job = job
        self.detector = OnnxDetector(load_bundle(job.bundle), 1, 1, "never", lanes=False)
        self.read = read_any(job.max_bytes)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        items = [Item(int(n), str(p)) for n, p in zip(batch["item"], batch["name"], strict=True)]
        rows = score_items(self.detector, items, self.read, self.job.limits)
        for row in rows:  # a column of one type: labels differ between models
            row["scores"] = json.dumps(row["scores"]) if row["scores"] is not None else None
        return {name: [row[name] for row in rows] for name in RESULT_FIELDS}


def score_ray(
    job: ScoreJob,
    address: str | None,
    actors: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """The same scoring on Ray Data: ``actors`` actors (default: one per CPU of the cluster),
    each holding a session; rows come back in item order."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    size = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))  # type: ignore[no-untyped-call]
    dataset = ray.data.from_items([{"item": i.number, "name": i.name} for i in job.items])
    scored = dataset.map_batches(
        _RayScorer,
        fn_constructor_args=(job,),
        batch_size=PAGE,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=size),
        num_cpus=1,
    )
    for batch in scored.iter_batches(batch_size=PAGE * 8, batch_format="numpy"):
        rows = [
            {name: _plain(batch[name][i]) for name in RESULT_FIELDS}
            for i in range(len(batch["item"]))
        ]
        for row in rows:
            row["scores"] = json.loads(row["scores"]) if row["scores"] else None
        if on_progress is not None:
            on_progress(len(rows))
        yield rows


def _plain(value: Any) -> Any:
    """numpy scalars back to Python values (NaN and None alike mean 'absent')."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value

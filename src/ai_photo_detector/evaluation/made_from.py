"""What a finished bundle was made from: its train, validation and test images, and the
out-of-source predictions of its leave-one-source-out folds.

`recalibrate` and `quantize` need them to re-fit calibration and re-evaluate on the very test
split training measured. A training run folder records them (``splits.json``,
``held_out.json``). A bundle folder alone (a shipped model, whose run is long gone) gets its
split made again from the data its manifest names, with the same deterministic splitter, and
is accepted only when the images are the ones it was trained on (the manifest's dataset
fingerprint) and each image went to the same split: the manifest's split digest, or, for a
bundle older than that digest, the split sizes and the bundle's own test ROC-AUC re-measured on
the split to within 1e-6. A bundle calibrated on its folds' out-of-source predictions needs its
run folder: without them its source-level gate could not be applied again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ai_photo_detector.data.discovery import DatasetError, Sample, discover, fingerprint
from ai_photo_detector.data.scan import scan
from ai_photo_detector.data.splits import split_digest, split_samples
from ai_photo_detector.evaluation.by_source import HeldOutSource
from ai_photo_detector.evaluation.finalize import Finished, finish_bundle
from ai_photo_detector.evaluation.report import metrics_of
from ai_photo_detector.evaluation.scoring import score_samples
from ai_photo_detector.model import bundle as bundle_io
from ai_photo_detector.model.familiarity import FamiliarityReference
from ai_photo_detector.model.inference import OnnxDetector
from ai_photo_detector.model.reviewed_kind import ReviewedKind
from ai_photo_detector.progress import ProgressFactory, no_progress
from ai_photo_detector.settings import Settings

SPLITS_FILE = "splits.json"
HELD_OUT_FILE = "held_out.json"


@dataclass
class MadeFrom:
    bundle: bundle_io.Bundle
    splits: dict[str, list[Sample]]  # train, val, test
    held_out: list[HeldOutSource]  # empty when the folds' predictions were not kept

    def finish(
        self,
        target: Path,
        fields: dict[str, Any],
        settings: Settings,
        progress: ProgressFactory = no_progress,
        float_roc_auc: float | None = None,
    ) -> Finished:
        """Calibrate, evaluate and gate the graph in ``target`` as this bundle was: on its
        validation and test splits, its folds' out-of-source predictions and its familiarity
        reference (the threshold measured again) and its reviewed kind (the band fitted again)."""
        manifest = self.bundle.manifest
        familiarity = None
        if manifest.familiarity is not None:
            arrays = self.bundle.familiarity_reference()
            familiarity = FamiliarityReference.from_arrays(arrays, manifest.familiarity.k)
        kind = self.bundle.reviewed_kind_arrays()
        return finish_bundle(
            target,
            fields,
            self.splits["val"],
            self.splits["test"],
            settings,
            progress,
            held_out=self.held_out,
            familiarity=familiarity,
            float_roc_auc=float_roc_auc,
            reviewed_kind=ReviewedKind.from_arrays(kind) if kind is not None else None,
        )


def made_from(folder: Path, settings: Settings) -> MadeFrom:
    """A training run folder (``bundle/`` beside the split it recorded) or a bundle folder."""
    if (folder / SPLITS_FILE).is_file():
        bundle = bundle_io.load_bundle(folder / "bundle")
        splits = recorded_splits(folder, bundle.manifest, settings)
        return MadeFrom(bundle, splits, load_held_out(folder))
    if (folder / bundle_io.MANIFEST_FILE).is_file():
        bundle = bundle_io.load_bundle(folder)
        if bundle.manifest.calibration.fitted_on == "out_of_source":
            raise DatasetError(
                f"{folder} was calibrated on its leave-one-source-out predictions, which only "
                "its training run folder keeps: pass the run folder (bundle/ and splits.json)"
            )
        return MadeFrom(bundle, remade_splits(bundle, settings), [])
    raise DatasetError(f"{folder} is neither a training run folder nor a bundle folder")


def recalibrate(
    folder: Path,
    settings: Settings,
    progress: ProgressFactory = no_progress,
    version: str | None = None,
) -> Finished:
    """Re-fit calibration (on the out-of-source predictions, else the validation split) and
    re-evaluate on the recorded test split; the bundle is rewritten in place, as ``version``
    when one is given (new bands are a new model to a registry)."""
    source = made_from(folder, settings)
    fields = source.bundle.manifest.model_dump(mode="json")
    if version:
        fields["version"] = version
    # An INT8 variant keeps its float model's test ROC-AUC: its cost stays reported and gated.
    float_roc_auc = fields["training"].get("quantization", {}).get("float_roc_auc")
    return source.finish(source.bundle.path, fields, settings, progress, float_roc_auc)


def recorded_splits(
    run_dir: Path, manifest: bundle_io.Manifest, settings: Settings
) -> dict[str, list[Sample]]:
    """A training run's train, validation and test samples, as its ``splits.json`` recorded."""
    recorded = json.loads((run_dir / SPLITS_FILE).read_text())
    by_path = {str(s.path): s for s in discover(_data_paths(manifest), settings.data.extensions)}
    missing = [p for paths in recorded.values() for p in paths if p not in by_path]
    if missing:
        raise DatasetError(f"{len(missing)} split images are gone, e.g. {missing[0]}")
    return {name: [by_path[p] for p in paths] for name, paths in recorded.items()}


def remade_splits(bundle: bundle_io.Bundle, settings: Settings) -> dict[str, list[Sample]]:
    """The bundle's split made again from its training data, checked to be the same one."""
    manifest = bundle.manifest
    samples = discover(_data_paths(manifest), settings.data.extensions)
    images = scan(samples)
    digests = {image.sample.path: image.sha256 for image in images}
    found = fingerprint([image.sample for image in images if image.ok], digests)
    expected = manifest.dataset.fingerprint
    if found != expected:
        raise DatasetError(
            "the images under the manifest's data paths are not the ones this bundle was "
            f"trained on (dataset fingerprint {found[:12]}…, expected {expected[:12]}…)"
        )
    data = settings.data
    splits = split_samples(
        images,
        val_fraction=data.val_fraction,
        test_fraction=data.test_fraction,
        seed=data.split_seed,
        near_duplicate_distance=data.near_duplicate_distance,
    )
    recorded = manifest.dataset.split_digest
    if recorded is not None:
        if split_digest(splits, digests) != recorded:
            raise _not_its_split("other images in each split")
        return splits
    sizes = {name: len(part) for name, part in splits.items()}
    if sizes != manifest.dataset.splits:
        raise _not_its_split(f"sizes {sizes}, training recorded {manifest.dataset.splits}")
    remeasured = _test_roc_auc(bundle, splits["test"], settings)
    recorded_auc = manifest.metrics.get("roc_auc", float("nan"))
    if not abs(remeasured - recorded_auc) <= 1e-6:
        raise _not_its_split(
            f"its test ROC-AUC there is {remeasured:.6f}, training recorded {recorded_auc:.6f}"
        )
    return splits


def _not_its_split(why: str) -> DatasetError:
    return DatasetError(
        f"the split made again is not the one it was trained on ({why}): set the data "
        "settings (seed, fractions) it was trained with"
    )


def _test_roc_auc(bundle: bundle_io.Bundle, test: list[Sample], settings: Settings) -> float:
    """Measured as training measured it (``metrics_of``), so the two can agree to 1e-6."""
    detector = OnnxDetector(bundle)
    scored = score_samples(detector, test)
    return float(metrics_of(scored, detector, settings.calibration.ece_bins)["roc_auc"])


def _data_paths(manifest: bundle_io.Manifest) -> list[str | Path]:
    paths = manifest.training.get("data_paths")
    if not paths:
        raise DatasetError("the manifest names no training data (training.data_paths)")
    return list(paths)


def save_held_out(run_dir: Path, held_out: list[HeldOutSource]) -> None:
    """Keep a run's out-of-source predictions, so it can be re-calibrated without refitting."""
    rows = [
        {
            "source": fold.source,
            "labels": fold.labels,
            "logits": fold.logits.tolist(),
            "unfamiliar": fold.unfamiliar.tolist(),
            "paths": fold.paths,
            "distance_ratio": None if fold.distance_ratio is None else fold.distance_ratio.tolist(),
            "cross_fitted": fold.cross_fitted,
            "reviewed_kind": None if fold.reviewed_kind is None else fold.reviewed_kind.tolist(),
        }
        for fold in held_out
    ]
    (run_dir / HELD_OUT_FILE).write_text(json.dumps(rows) + "\n", encoding="utf-8")


def load_held_out(run_dir: Path) -> list[HeldOutSource]:
    path = run_dir / HELD_OUT_FILE
    if not path.is_file():
        return []
    return [
        HeldOutSource(
            source=row["source"],
            labels=row["labels"],
            logits=np.asarray(row["logits"], np.float32),
            unfamiliar=np.asarray(row["unfamiliar"], bool),
            paths=row["paths"],
            distance_ratio=None
            if row.get("distance_ratio") is None
            else np.asarray(row["distance_ratio"], np.float32),
            cross_fitted=bool(row.get("cross_fitted", False)),
            reviewed_kind=None
            if row.get("reviewed_kind") is None
            else np.asarray(row["reviewed_kind"], bool),
        )
        for row in json.loads(path.read_text(encoding="utf-8"))
    ]

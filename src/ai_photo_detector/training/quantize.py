"""A static INT8 variant of a fine-tuned bundle: quantised, re-calibrated and gated on its own.

ONNX Runtime's static quantisation (QDQ, weights per channel) with activation ranges measured on
training images of the run. Activations are quantised with fixed ranges, so unlike dynamic
quantisation an image's answer does not depend on its batch. The linear head stays in float on
the (quantised) features, so class activation maps stay exact. The variant gets its own
calibration (on its own validation predictions: the leave-one-source-out folds were fitted in
float and are not kept) and its own evaluation and gates; its cost is stated against the float
bundle on the same test split.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from ai_photo_detector import bundle as bundle_io
from ai_photo_detector.bundle import BundleError
from ai_photo_detector.data.discovery import Sample
from ai_photo_detector.familiarity import FamiliarityReference
from ai_photo_detector.finalize import Finished, finish_bundle, load_held_out, recorded_splits
from ai_photo_detector.imaging import PreprocessSpec, decode_image, to_model_input
from ai_photo_detector.progress import ProgressFactory, no_progress
from ai_photo_detector.settings import Settings

# Files a finished bundle regenerates; everything else is copied from the float bundle.
_REGENERATED = {
    bundle_io.MANIFEST_FILE,
    bundle_io.MODEL_FILE,
    "evaluation.json",
    "evaluation.md",
    "roc.png",
    "reliability.png",
}


class _Images(CalibrationDataReader):  # type: ignore[misc]
    """Model inputs of training images, a few at a time, for activation ranges."""

    def __init__(self, samples: list[Sample], spec: PreprocessSpec, input_name: str) -> None:
        self.batches: Iterator[dict[str, NDArray[np.float32]]] = (
            {input_name: self._batch(samples[start : start + 8], spec)}
            for start in range(0, len(samples), 8)
        )

    @staticmethod
    def _batch(samples: list[Sample], spec: PreprocessSpec) -> NDArray[np.float32]:
        arrays = [
            to_model_input(decode_image(s.path.read_bytes(), spec).image, spec) for s in samples
        ]
        return np.stack(arrays).astype(np.float32)

    def get_next(self) -> dict[str, NDArray[np.float32]] | None:
        return next(self.batches, None)


def _head_node(model_path: Path) -> str:
    for node in onnx.load(str(model_path)).graph.node:
        if "logits" in node.output:
            return str(node.name)
    raise BundleError(f"{model_path} has no node computing 'logits'")


def quantize_run(
    run_dir: Path,
    settings: Settings,
    calibration_images: int = 256,
    progress: ProgressFactory = no_progress,
) -> tuple[Finished, dict[str, Any]]:
    """Write ``run_dir/bundle-int8`` from the run's float bundle; returns the finished variant
    and how it compares with the float bundle on the same test split."""
    source = bundle_io.load_bundle(run_dir / "bundle")
    manifest = source.manifest
    if manifest.encoder is not None:
        raise BundleError("a packaged-encoder bundle is built from its package at load time")
    splits = recorded_splits(run_dir, manifest, settings)
    rng = np.random.default_rng(0)
    train = splits["train"]
    chosen = rng.choice(len(train), min(calibration_images, len(train)), replace=False)
    picked = [train[i] for i in sorted(chosen)]
    target = run_dir / "bundle-int8"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    for item in source.path.iterdir():
        if item.is_file() and item.name not in _REGENERATED:
            shutil.copy2(item, target / item.name)
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source.model_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target / bundle_io.MODEL_FILE),
            _Images(picked, manifest.preprocessing, manifest.onnx.input),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            nodes_to_exclude=[_head_node(source.model_path)],
        )
    fields = manifest.model_dump(mode="json", exclude={"files", "probe", "familiarity"})
    fields["name"] = f"{manifest.name}-int8"
    fields["training"] = {
        **fields["training"],
        "quantization": {
            "method": "ONNX Runtime static, QDQ, weights INT8 per channel, activations UINT8",
            "calibration_images": len(picked),
            "float_bundle": f"{manifest.name} {manifest.version}",
            # Its folds were not quantized: the float folds' out-of-source predictions stand in
            # (calibration and the source-level gates), so a variant never passes a gate its
            # float model failed.
            "source_figures": "the float model's leave-one-source-out folds",
        },
    }
    familiarity = None
    if manifest.familiarity is not None:  # the float reference; its threshold is re-measured
        familiarity = FamiliarityReference.from_arrays(
            source.familiarity_reference(), manifest.familiarity.k
        )
    finished = finish_bundle(
        target,
        fields,
        splits["val"],
        splits["test"],
        settings,
        progress,
        held_out=load_held_out(run_dir),
        familiarity=familiarity,
    )
    float_auc = manifest.metrics.get("roc_auc", float("nan"))
    cost = {
        "float_roc_auc": float_auc,
        "int8_roc_auc": finished.report["overall"]["roc_auc"],
        "roc_auc_cost": float_auc - finished.report["overall"]["roc_auc"],
    }
    return finished, cost

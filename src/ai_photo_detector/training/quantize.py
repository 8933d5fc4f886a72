"""A static INT8 variant of a fine-tuned bundle: quantised, re-calibrated and gated on its own.

ONNX Runtime's static quantisation (QDQ, weights per channel) with activation ranges measured on
training images. Activations are quantised with fixed ranges, so unlike dynamic quantisation an
image's answer does not depend on its batch. The linear head stays in float on the (quantised)
features, so class activation maps stay exact. The variant is calibrated again: on the float
folds' out-of-source predictions where its run kept them (the folds are not quantised), else on
its own validation predictions. It is evaluated on the float bundle's test split and gated on
its own figures, the ROC-AUC it costs against the float bundle included."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

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

from ai_photo_detector.data.discovery import Sample
from ai_photo_detector.evaluation.finalize import Finished
from ai_photo_detector.evaluation.made_from import made_from
from ai_photo_detector.imaging import PreprocessSpec, decode_image, to_model_input
from ai_photo_detector.model import bundle as bundle_io
from ai_photo_detector.model.bundle import BundleError
from ai_photo_detector.progress import ProgressFactory, no_progress
from ai_photo_detector.settings import Settings

# Files a finished bundle regenerates (or, for the card, must not inherit); everything else is
# copied from the float bundle.
_REGENERATED = {
    "MODEL_CARD.md",
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


def _make_room(target: Path, source: Path) -> None:
    """Empty ``target`` for the variant, keeping a model card written beside an earlier one;
    never a folder that holds the float bundle or lies inside it."""
    target, source = target.resolve(), source.resolve()
    if target == source or target in source.parents or source in target.parents:
        raise BundleError(f"the INT8 variant cannot be written to {target}: it overlaps {source}")
    card = target / "MODEL_CARD.md"
    kept = card.read_bytes() if card.is_file() else None
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    if kept is not None:
        card.write_bytes(kept)


def quantize(
    folder: Path,
    target: Path,
    settings: Settings,
    calibration_images: int = 256,
    progress: ProgressFactory = no_progress,
    version: str | None = None,
) -> Finished:
    """Write the INT8 variant of the float bundle in ``folder`` (a training run, or a bundle
    whose split can be made again) to ``target``; its report's ``quantization`` entry states
    the ROC-AUC it costs against the float bundle on the same test split."""
    source = made_from(folder, settings)
    manifest = source.bundle.manifest
    if manifest.encoder is not None:
        raise BundleError("a packaged-encoder bundle is built from its package at load time")
    rng = np.random.default_rng(0)
    train = source.splits["train"]
    chosen = rng.choice(len(train), min(calibration_images, len(train)), replace=False)
    picked = [train[i] for i in sorted(chosen)]
    _make_room(target, source.bundle.path)
    for item in source.bundle.path.iterdir():
        if item.is_file() and item.name not in _REGENERATED:
            shutil.copy2(item, target / item.name)
    model_path = source.bundle.model_path
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target / bundle_io.MODEL_FILE),
            _Images(picked, manifest.preprocessing, manifest.onnx.input),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            # 7-bit weights: without VNNI, x86 INT8 kernels add two 8-bit products in 16 bits
            # and overflow (model/static_int8.py); with 7 they compute alike on every CPU.
            reduce_range=True,
            nodes_to_exclude=[_head_node(model_path)],
        )
    fields = manifest.model_dump(mode="json", exclude={"files", "probe", "familiarity"})
    fields["name"] = f"{manifest.name}-int8"
    fields["version"] = version or manifest.version
    float_roc_auc = manifest.metrics.get("roc_auc", float("nan"))
    fields["training"] = {
        **fields["training"],
        "quantization": {
            "method": "ONNX Runtime static, QDQ, weights INT8 per channel in a 7-bit range, "
            "activations UINT8",
            "calibration_images": len(picked),
            "float_bundle": f"{manifest.name} {manifest.version}",
            "float_roc_auc": float_roc_auc,
            # Its folds were not quantized: the float folds' out-of-source predictions stand in
            # (calibration and the source-level gates), so a variant never passes a gate its
            # float model failed.
            "source_figures": "the float model's leave-one-source-out folds"
            if source.held_out
            else "none (the float model kept no leave-one-source-out predictions)",
        },
    }
    # The float model's familiarity reference is kept; its threshold is measured again.
    return source.finish(target, fields, settings, progress, float_roc_auc=float_roc_auc)

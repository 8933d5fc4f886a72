"""Export the detector to ONNX and prove the export computes what PyTorch computes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from ai_photo_detector.errors import TrainingFailed
from ai_photo_detector.model.runtimes import make_session
from ai_photo_detector.training.graph import optimize_file
from ai_photo_detector.training.model import Detector

OUTPUT_NAMES = ["logits", "features", "embedding"]


class ExportError(TrainingFailed):
    """The exported graph disagrees with the PyTorch model."""


def export_onnx(model: Detector, path: Path, input_size: int, opset: int) -> int:
    """Export with a dynamic batch axis, then fold the backbone's shape-computed padding.

    The parity check that follows compares the rewritten graph with PyTorch. Returns how
    many padding computations were folded.
    """
    model.eval()
    example = torch.zeros(2, 3, input_size, input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=OUTPUT_NAMES,
            dynamic_axes={"image": {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}},
            opset_version=opset,
            dynamo=False,
        )
    return optimize_file(path, "image", input_size)


@dataclass(frozen=True)
class Parity:
    absolute: float  # largest absolute difference of any output
    scaled: float  # the same, relative to each output's largest magnitude (when above 1)


def parity_difference(model: Detector, path: Path, batch: NDArray[np.float32]) -> Parity:
    """How far ONNX Runtime's outputs are from PyTorch's, each output's difference relative to
    its own scale (its largest magnitude, at least 1): feature maps reach tens, and after 16
    blocks float32 accumulation order alone moves their small values by more than 1e-4."""
    model.eval()
    with torch.no_grad():
        expected = [t.numpy() for t in model(torch.from_numpy(batch))]
    session = make_session(str(path))
    actual = session.run(OUTPUT_NAMES, {"image": batch})
    pairs = list(zip(expected, actual, strict=True))
    return Parity(
        absolute=float(max(np.abs(e - a).max() for e, a in pairs)),
        scaled=float(max(np.abs(e - a).max() / max(1.0, float(np.abs(e).max())) for e, a in pairs)),
    )


def check_parity(
    model: Detector, path: Path, batch: NDArray[np.float32], tolerance: float
) -> Parity:
    parity = parity_difference(model, path, batch)
    if not parity.scaled <= tolerance:
        raise ExportError(
            f"ONNX and PyTorch outputs differ by {parity.scaled:.2e} (absolute "
            f"{parity.absolute:.2e}), over the {tolerance:.0e} limit"
        )
    return parity

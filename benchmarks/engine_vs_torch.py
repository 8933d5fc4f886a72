"""ONNX Runtime engine vs PyTorch eager on the same detector and images, in one process.

Target: the engine at >= 3x the images/s of PyTorch eager.
Run: .venv/bin/python -m benchmarks.engine_vs_torch
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from ai_photo_detector.imaging import PreprocessSpec, preprocess_bytes
from ai_photo_detector.model.runtimes import make_session
from ai_photo_detector.training.export import export_onnx
from ai_photo_detector.training.model import build_detector
from benchmarks.common import best_rates, print_table, write_csv
from benchmarks.photos import sample_photo


def main() -> None:
    spec = PreprocessSpec(input_size=224)
    images = np.stack([preprocess_bytes(sample_photo(1024, 1024, i), spec)[0] for i in range(16)])
    model = build_detector("tf_efficientnet_lite0", 2, pretrained=True).eval()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        export_onnx(model, path, 224, 17)
        session = make_session(str(path))
        for batch_size in (1, 8, 16):
            batch = np.ascontiguousarray(images[:batch_size])
            tensor = torch.from_numpy(batch)

            def eager(tensor: torch.Tensor = tensor) -> None:
                with torch.inference_mode():
                    model(tensor)

            def engine(batch: np.ndarray = batch) -> None:
                session.run(["logits", "embedding"], {"image": batch})

            rates = best_rates({"torch": eager, "onnx": engine}, batch_size)
            torch_rate, onnx_rate = rates["torch"], rates["onnx"]
            rows.append(
                {
                    "batch_size": batch_size,
                    "torch_eager_images_per_s": torch_rate,
                    "onnxruntime_images_per_s": onnx_rate,
                    "speedup": onnx_rate / torch_rate,
                    "torch_threads": torch.get_num_threads(),
                }
            )
    print_table(rows)
    print("written", write_csv("engine_vs_torch", rows))


if __name__ == "__main__":
    main()

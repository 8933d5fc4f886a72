"""Ways to run the default's encoder graph: speed by batch size, batch independence, fidelity.

Every variant is built from the same packaged weights and the default bundle's recipe (input
size, layer, calibrated ranges) and runs on both cores:

- ``packaged dynamic INT8, ONNX Runtime``: the 2.1.0 default's graph (activation scale per run);
- ``static INT8, ONNX Runtime`` / ``static INT8, OpenVINO``: the shipped graph (recipe ranges);
- ``INT8 weights, OpenVINO per-token dynamic``: the packaged INT8 weights as compressed weights,
  activations quantised by OpenVINO per group of 64 values of each token at run time;
- ``static INT8, OpenVINO, N tokens merged per layer``: the shipped graph with N patch tokens
  merged after each layer but the last (``training.encoder_token_merges``, model/token_merging);
- ``float, OpenVINO f32`` / ``float, OpenVINO bf16``: the weights dequantised.

Fidelity is the mean (and lowest) cosine of each variant's embedding to the float graph's on
the first 96 images of the shared datasets (scikit-image photos where they are absent); batch
independence is the largest embedding difference of an image alone and in a batch of 9.
Run: .venv/bin/python -m benchmarks.encoder_graphs
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ai_photo_detector.imaging import DecodeLimits, preprocess_bytes
from ai_photo_detector.model.bundle import load_bundle
from ai_photo_detector.model.encoders import EncoderRecipe, encoder_graph
from ai_photo_detector.model.runtimes import GraphSession, OpenVinoSession, make_session
from ai_photo_detector.model.static_int8 import float_graph, keep_int8_weights
from benchmarks.common import print_table, write_csv
from benchmarks.photos import sample_photo

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
BATCHES = (1, 8, 16)
MERGES = (4, 8, 12)


def images(size_spec: Any) -> np.ndarray:
    files = sorted(DATASETS.glob("*/*/*")) if DATASETS.is_dir() else []
    random.Random(0).shuffle(files)
    raw = [f.read_bytes() for f in files[:96]] or [sample_photo(512, 512, i) for i in range(8)]
    return np.stack([preprocess_bytes(data, size_spec, DecodeLimits())[0] for data in raw])


def rate(session: GraphSession, batch: np.ndarray, seconds: float = 2.0) -> float:
    session.run(["embedding"], {"image": batch})
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(["embedding"], {"image": batch})
        done += len(batch)
    return done / (time.perf_counter() - started)


def embed(session: GraphSession, inputs: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [
            session.run(["embedding"], {"image": inputs[i : i + 8]})[0]
            for i in range(0, len(inputs), 8)
        ]
    )


def _merged(recipe: EncoderRecipe, merges: int) -> Callable[[], GraphSession]:
    """The shipped graph with token merging (the unmerged graph's activation ranges)."""
    merged = recipe.model_copy(update={"token_merges": merges})
    return lambda: OpenVinoSession(encoder_graph(merged).SerializeToString())


def main() -> None:
    bundle = load_bundle(ROOT / "models" / "default")
    encoder = bundle.manifest.encoder
    if encoder is None or encoder.recipe.activation_ranges is None:
        raise SystemExit("models/default is not a static INT8 packaged-encoder bundle")
    static = encoder.recipe
    dynamic = static.model_copy(update={"precision": "dynamic_int8", "activation_ranges": None})
    inputs = images(bundle.manifest.preprocessing)
    float_bytes = float_graph(encoder_graph(dynamic)).SerializeToString()
    static_bytes = encoder_graph(static).SerializeToString()
    variants: dict[str, Callable[[], GraphSession]] = {
        "packaged dynamic INT8, ONNX Runtime": lambda: make_session(
            encoder_graph(dynamic).SerializeToString()
        ),
        "static INT8, ONNX Runtime": lambda: make_session(static_bytes),
        "static INT8, OpenVINO (shipped)": lambda: OpenVinoSession(static_bytes),
        **{
            f"static INT8, OpenVINO, {merges} tokens merged per layer": _merged(static, merges)
            for merges in MERGES
        },
        "INT8 weights, OpenVINO per-token dynamic": lambda: OpenVinoSession(
            keep_int8_weights(encoder_graph(dynamic)).SerializeToString(),
            extra={"DYNAMIC_QUANTIZATION_GROUP_SIZE": 64},
        ),
        "float, OpenVINO f32": lambda: OpenVinoSession(float_bytes),
        "float, OpenVINO bf16": lambda: OpenVinoSession(
            float_bytes, extra={"INFERENCE_PRECISION_HINT": "bf16"}
        ),
    }
    reference = embed(OpenVinoSession(float_bytes), inputs)
    rows: list[dict[str, Any]] = []
    for name, opener in variants.items():
        session = opener()
        found = embed(session, inputs)
        cosine = (found * reference).sum(1) / np.linalg.norm(found, axis=1)
        cosine /= np.linalg.norm(reference, axis=1)
        (alone,) = session.run(["embedding"], {"image": inputs[:1]})
        (batched,) = session.run(["embedding"], {"image": inputs[:9]})
        row: dict[str, Any] = {
            "graph": name,
            **{f"batch_{b}_per_s": rate(session, inputs[:b]) for b in BATCHES},
            "alone_vs_batch_max_diff": float(np.abs(alone[0] - batched[0]).max()),
            "cosine_to_float_mean": float(cosine.mean()),
            "cosine_to_float_min": float(cosine.min()),
        }
        row["best_per_s"] = max(row[f"batch_{b}_per_s"] for b in BATCHES)
        rows.append(row)
    baseline = rows[0]["best_per_s"]
    for row in rows:
        row["best_to_packaged_best"] = row["best_per_s"] / baseline
    print_table(rows)
    write_csv("encoder_graphs", rows)


if __name__ == "__main__":
    main()

"""What merging similar tokens inside the encoder costs on unseen sources, and what it buys.

    python -m research.token_merge_study                    # ~20 min on 2 cores
    python -m research.token_merge_study --merges 0 12 --sizes 160

For each (input size, tokens merged per layer) the default's encoder (CLIP ViT-B/16, layer 7)
runs with that many patch tokens merged after each of layers 1-6 (model/token_merging). Two
measures, each against the same size unmerged:

- **accuracy**: every image of the shared sets, plain view (JPEG 90, the shipped view),
  through the packaged INT8 graph one image at a time; leave one source out with the project's
  logistic head (C = 0.01) on the mean patch token, over the four sets the default trains on
  and over all five; and the cosine of each embedding to the unmerged one;
- **speed**: the graph the default serves (static INT8, ranges calibrated on 64 training images
  of this view, 7-bit weights, OpenVINO where installed), both cores, batch 1 and 16.

Rows use the plain view only, so they compare among themselves, not with the model card's
figures of the full pipeline (augmented views, calibration).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score

from ai_photo_detector.data.discovery import discover
from ai_photo_detector.imaging import PreprocessSpec, decode_image, to_model_input
from ai_photo_detector.model.encoders import (
    INPUT_NAME,
    calibrate,
    encoder_family,
    encoder_graph,
)
from ai_photo_detector.model.runtimes import make_session, open_session
from ai_photo_detector.model.token_merging import encoder_operations
from ai_photo_detector.settings import Settings
from ai_photo_detector.training.backbones.frozen import fit_linear_head
from research.transfer_study import DATASETS

FOUR = ["shoes-midjourney", "diffusiondb-coco", "playground-mixed", "chatgpt-gemini"]
FIVE = [*FOUR, "realorai-photoreal"]
LAYER = 7


def _spec(size: int) -> PreprocessSpec:
    family = encoder_family("clip_vit_b16")
    return PreprocessSpec(
        input_size=size, mean=family.mean, std=family.std, canonical_jpeg_quality=90
    )


def model_inputs(size: int) -> tuple[NDArray[np.float16], NDArray[np.int64], NDArray[np.str_]]:
    """Every shared image's plain view at ``size``, with whether it is AI and its source."""
    settings = Settings()
    samples = discover([DATASETS / s for s in FIVE], settings.data.extensions)
    spec = _spec(size)
    inputs = np.zeros((len(samples), 3, size, size), np.float16)
    for i, sample in enumerate(samples):
        inputs[i] = to_model_input(decode_image(sample.path.read_bytes(), spec).image, spec)
    ai = np.array([s.label == settings.data.ai_label for s in samples], np.int64)
    return inputs, ai, np.array([s.source for s in samples])


def embeddings(graph: bytes, inputs: NDArray[np.float16]) -> NDArray[np.float32]:
    session = make_session(graph)
    rows = [
        session.run(["embedding"], {INPUT_NAME: image[None].astype(np.float32)})[0][0]
        for image in inputs
    ]
    return np.stack(rows).astype(np.float32)


def leave_one_out(
    features: NDArray[np.float32],
    ai: NDArray[np.int64],
    source: NDArray[np.str_],
    sources: list[str],
) -> dict[str, float]:
    found = {}
    for held in sources:
        train = np.isin(source, sources) & (source != held)
        test = source == held
        weight, _ = fit_linear_head(features[train], ai[train], 2, 0.01, 0)
        scores = features[test] @ (weight[1] - weight[0])
        found[held] = float(roc_auc_score(ai[test], scores))
    return found


def speed(size: int, merges: int, inputs: NDArray[np.float16]) -> dict[int | str, float | str]:
    """Images/s of the served kind of graph (static INT8) at batch 1 and 16."""
    family = encoder_family("clip_vit_b16")
    recipe = family.recipe(size, LAYER, precision="static_int8", weight_bits=7, token_merges=merges)
    picked = np.random.default_rng(0).choice(len(inputs), 64, replace=False)
    batches = [inputs[picked[i : i + 16]].astype(np.float32) for i in range(0, 64, 16)]
    recipe = calibrate(recipe, batches)
    session, runtime = open_session(encoder_graph(recipe).SerializeToString(), "openvino")
    rates: dict[int | str, float | str] = {"runtime": runtime}
    for batch in (1, 16):
        feed = {INPUT_NAME: np.repeat(inputs[:1].astype(np.float32), batch, axis=0)}
        session.run(["embedding"], feed)
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < 3.0:
            session.run(["embedding"], feed)
            done += batch
        rates[batch] = done / (time.perf_counter() - began)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 224])
    parser.add_argument("--merges", type=int, nargs="+", default=[0, 8, 12, 16, 24])
    parser.add_argument("--no-speed", action="store_true")
    args = parser.parse_args()
    family = encoder_family("clip_vit_b16")
    print(
        "| size | merged per layer | operations (160 px, none merged = 1) | cosine (lowest) | "
        + " | ".join(s.split("-")[0] for s in FIVE)
        + " | mean of four | mean of five | img/s batch 1 | img/s batch 16 |"
    )
    print("|---" * 13 + "|")
    for size in args.sizes:
        began = time.monotonic()
        inputs, ai, source = model_inputs(size)
        print(f"<!-- {len(inputs)} images at {size} px in {time.monotonic() - began:.0f} s -->")
        patches = (size // family.patch) ** 2
        reference = None
        for merges in args.merges:
            graph = encoder_graph(family.recipe(size, LAYER, token_merges=merges))
            features = embeddings(graph.SerializeToString(), inputs)
            if reference is None:
                reference = features
            cosine = np.sum(features * reference, axis=1) / (
                np.linalg.norm(features, axis=1) * np.linalg.norm(reference, axis=1)
            )
            four = leave_one_out(features, ai, source, FOUR)
            five = leave_one_out(features, ai, source, FIVE)
            rates = (
                {1: float("nan"), 16: float("nan")}
                if args.no_speed
                else speed(size, merges, inputs)
            )
            ops = encoder_operations(patches, LAYER, merges) / encoder_operations(100, LAYER, 0)
            cells = " | ".join(f"{five[s]:.3f}" for s in FIVE)
            print(
                f"| {size} | {merges} | {ops:.2f} | {cosine.mean():.3f} ({cosine.min():.3f}) | "
                f"{cells} | {np.mean(list(four.values())):.3f} | "
                f"{np.mean(list(five.values())):.3f} | {rates[1]:.1f} | {rates[16]:.1f} "
                f"({rates['runtime']}) |",
                flush=True,
            )
            print(f"<!-- four sets: {four} -->", flush=True)


if __name__ == "__main__":
    main()

"""Which CLIP features and head weighting carry over to sources a model never saw.

Two steps, so that the many fits cost seconds once the encoder has run:

    python -m research.transfer_study extract --mode resize   # ~10 min on 2 cores
    python -m research.transfer_study extract --mode native
    python -m research.transfer_study compare

``extract`` runs the packaged CLIP ViT-B/16 once per view (the plain view and two augmented
views, as training makes them) and keeps the mean patch token of all 12 layers. ``resize`` is
the shipped model view (shorter side to 160, centre crop, JPEG 90); ``native`` crops the centre
160x160 at the file's own resolution (no resampling, so a generator's pixel-level traces stay),
then JPEG 90. ``compare`` fits the project's own logistic head (``fit_linear_head``, C=0.01) for
each configuration and prints ROC-AUC per source, twice: leave one source out (trained on the
other three, scored on every image of the fourth) and in source (5-fold cross-validation within
the source, the other sources always in training). The model card quotes its output.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from ai_photo_detector.data.discovery import discover
from ai_photo_detector.degrade import jpeg_reencode
from ai_photo_detector.imaging import PreprocessSpec, decode_image, normalise, to_model_input
from ai_photo_detector.model.encoders import INPUT_NAME, encoder_family, encoder_graph
from ai_photo_detector.model.runtimes import make_session
from ai_photo_detector.settings import Settings
from ai_photo_detector.training.augment import augment
from ai_photo_detector.training.backbones.frozen import fit_linear_head
from ai_photo_detector.training.weighting import group_weights

SOURCES = ["shoes-midjourney", "diffusiondb-coco", "playground-mixed", "chatgpt-gemini"]
DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
OUT = Path(__file__).resolve().parent / "features"
SIZE, VIEWS, LAYERS = 160, 3, 12


def _layer_graph() -> bytes:
    """The shipped recipe's graph cut at layer 12, with every layer's mean patch token out."""
    from onnx import TensorProto, helper

    from ai_photo_detector.model.encoders import _prune

    family = encoder_family("clip_vit_b16")
    model = encoder_graph(family.recipe(SIZE, LAYERS))
    graph = model.graph
    outputs = []
    for layer in range(1, LAYERS + 1):
        tokens = family._layer_output(graph, layer)  # type: ignore[attr-defined]
        graph.node.extend(
            [
                helper.make_node(
                    "Slice", [tokens, "tokens.start", "tokens.end", "tokens.axis"], [f"p{layer}"]
                ),
                helper.make_node("ReduceMean", [f"p{layer}"], [f"m{layer}"], axes=[1], keepdims=0),
            ]
        )
        outputs.append(f"m{layer}")
    del graph.output[:]
    graph.output.extend(
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    )
    _prune(graph, outputs)
    return bytes(model.SerializeToString())


def clip_spec(jpeg_draft: bool = True) -> PreprocessSpec:
    """The shipped recipe's CLIP view: 160 px, JPEG 90, CLIP's mean and deviation."""
    family = encoder_family("clip_vit_b16")
    return PreprocessSpec(
        input_size=SIZE,
        mean=family.mean,
        std=family.std,
        canonical_jpeg_quality=90,
        jpeg_draft=jpeg_draft,
    )


def views_of_every_image(
    spec: PreprocessSpec, features_of: Callable[[list[Image.Image]], NDArray[np.float32]]
) -> tuple[NDArray[np.float16], list[str], list[bool]]:
    """``features_of`` each image's plain view and VIEWS - 1 augmented ones (seeded per image,
    so every study sees the same views); with the images' sources and whether each is AI."""
    settings = Settings()
    samples = discover([DATASETS / s for s in SOURCES], settings.data.extensions)
    rows, began = [], time.monotonic()
    for i, sample in enumerate(samples):
        image = decode_image(sample.path.read_bytes(), spec).image
        rng = random.Random(f"0:{sample.path.name}:{i}")
        views = [image] + [augment(image, settings.training.augment, rng) for _ in range(VIEWS - 1)]
        rows.append(features_of(views).astype(np.float16))
        if i % 500 == 0:
            print(f"{i}/{len(samples)} images, {time.monotonic() - began:.0f} s", flush=True)
    ai = [s.label == settings.data.ai_label for s in samples]
    return np.stack(rows), [s.source for s in samples], ai


def extract(mode: str) -> Path:
    spec = clip_spec(jpeg_draft=mode == "resize")  # a native crop must not be downscaled

    def model_input(image: Image.Image) -> NDArray[np.float32]:
        width, height = image.size
        if mode == "resize" or min(width, height) < SIZE:
            return to_model_input(image, spec)
        left, top = (width - SIZE) // 2, (height - SIZE) // 2
        crop = image.crop((left, top, left + SIZE, top + SIZE))
        return normalise(jpeg_reencode(crop, 90), spec)

    session = make_session(_layer_graph())
    names = [o.name for o in session.get_outputs()]

    def features_of(views: list[Image.Image]) -> NDArray[np.float32]:
        # One image per run: the INT8 graph is batch-dependent.
        found = [session.run(names, {INPUT_NAME: model_input(v)[None]}) for v in views]
        return np.stack([np.stack([f[0] for f in one]) for one in found])

    features, source, ai = views_of_every_image(spec, features_of)
    OUT.mkdir(exist_ok=True)
    path = OUT / f"clip{SIZE}-{mode}.npz"
    np.savez(path, features=features, source=source, ai=ai)
    return path


def _fit_score(
    features: NDArray[np.float32],
    ai: NDArray[np.bool_],
    source: NDArray[np.str_],
    train: NDArray[np.int64],
    test: NDArray[np.int64],
    weighting: str,
) -> NDArray[np.float32]:
    rows = features[train].reshape(-1, features.shape[-1])
    targets = np.repeat(ai[train], VIEWS).astype(np.int64)
    groups = list(zip(np.repeat(source[train], VIEWS), targets, strict=True))
    weight, bias = fit_linear_head(rows, targets, 2, 0.01, 0, group_weights(groups, weighting))
    logits = features[test, 0] @ weight.T + bias
    return logits[:, 1] - logits[:, 0]


def leave_one_out(features, ai, source, weighting):  # type: ignore[no-untyped-def]
    result = {}
    for held in SOURCES:
        train, test = np.where(source != held)[0], np.where(source == held)[0]
        scores = _fit_score(features, ai, source, train, test, weighting)
        result[held] = roc_auc_score(ai[test], scores)
    return result


def in_source(features, ai, source, weighting):  # type: ignore[no-untyped-def]
    result = {}
    for held in SOURCES:
        mine, others = np.where(source == held)[0], np.where(source != held)[0]
        scores = np.zeros(len(mine), np.float32)
        folds = StratifiedKFold(5, shuffle=True, random_state=0).split(mine, ai[mine])
        for fit_part, test_part in folds:
            train = np.concatenate([others, mine[fit_part]])
            scores[test_part] = _fit_score(features, ai, source, train, mine[test_part], weighting)
        result[held] = roc_auc_score(ai[mine], scores)
    return result


CONFIGS: list[tuple[str, str, tuple[int, ...], str]] = [
    # (name, view, layers, weighting)
    ("layer 7 (shipped)", "resize", (7,), "none"),
    ("layer 7, sqrt weighting", "resize", (7,), "sqrt"),
    ("layer 7, balanced weighting", "resize", (7,), "balanced"),
    ("layer 10", "resize", (10,), "none"),
    ("layers 7 + 10", "resize", (7, 10), "none"),
    ("layers 7 + 5", "resize", (7, 5), "none"),
    ("native crop, layer 7", "native", (7,), "none"),
    ("layer 7 + native crop layer 7", "both", (7,), "none"),
]


def compare() -> None:
    loaded = {mode: np.load(OUT / f"clip{SIZE}-{mode}.npz") for mode in ("resize", "native")}
    source, ai = loaded["resize"]["source"], loaded["resize"]["ai"]
    header = " | ".join(s.split("-")[0] for s in SOURCES)
    for title, measure in (
        ("leave one source out", leave_one_out),
        ("in source, 5-fold", in_source),
    ):
        print(f"\n{title}\n| features | {header} | mean |\n|---|---|---|---|---|---|")
        for name, view, layers, weighting in CONFIGS:
            modes = ("resize", "native") if view == "both" else (view,)
            features = np.concatenate(
                [
                    loaded[m]["features"][:, :, layer - 1].astype(np.float32)
                    for m in modes
                    for layer in layers
                ],
                axis=-1,
            )
            found = measure(features, ai, source, weighting)
            cells = " | ".join(f"{found[s]:.3f}" for s in SOURCES)
            print(f"| {name} | {cells} | {np.mean(list(found.values())):.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    step = commands.add_parser("extract")
    step.add_argument("--mode", choices=["resize", "native"], default="resize")
    commands.add_parser("compare")
    args = parser.parse_args()
    if args.command == "extract":
        print(f"features written to {extract(args.mode)}")
    else:
        compare()


if __name__ == "__main__":
    main()

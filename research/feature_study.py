"""Richer pooling of the CLIP tokens, and a fusion with frozen EfficientNet-Lite0 features:
do they carry over to unseen sources better than the shipped mean patch token of layer 7?

    python -m research.feature_study extract-clip           # ~8 min on 2 cores
    python -m research.feature_study extract-efficientnet   # ~4 min
    python -m research.feature_study compare
    python -m research.feature_study curve    # a few labelled photos of the held-out source

Both extractions see the same three views of every image as ``research.transfer_study`` (the
plain view and two augmented ones, seeded alike). ``extract-clip`` keeps, for layers 5-10 of
the packaged CLIP ViT-B/16 at 160 px, the patch tokens' mean, their mean square (for the
standard deviation) and the class token. ``extract-efficientnet`` keeps the average-pooled
output of every stage of the ImageNet EfficientNet-Lite0 (frozen, 224 px, [-1, 1]) and its
1280-d pre-logits. ``compare`` prints leave-one-source-out ROC-AUC of the project's logistic
head (C = 0.01) for each feature set; the model card quotes it. ``curve`` adds k labelled
photos of the held-out source to training (half of each label, 8 random draws) and scores its
other photos, with the head's weighting unchanged, balanced, or that source boosted
(``training.boosted_sources``): how much a few reviewed photos of a new source buy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from sklearn.metrics import roc_auc_score

from ai_photo_detector.data.discovery import discover
from ai_photo_detector.imaging import PreprocessSpec, to_model_input
from ai_photo_detector.settings import Settings
from ai_photo_detector.training.backbones.frozen import fit_linear_head
from ai_photo_detector.training.weighting import group_weights
from research.transfer_study import (
    DATASETS,
    OUT,
    SIZE,
    SOURCES,
    VIEWS,
    _fit_score,
    clip_spec,
    leave_one_out,
    views_of_every_image,
)

CLIP_LAYERS = (5, 6, 7, 8, 9, 10)
STATS = ("mean", "square", "cls")
CLIP_FILE, EFFICIENTNET_FILE = OUT / "clip160-stats.npz", OUT / "efficientnet224.npz"


def _clip_statistics_graph() -> tuple[bytes, list[str]]:
    from onnx import TensorProto, helper, numpy_helper

    from ai_photo_detector.model.encoders import _prune, encoder_family, encoder_graph

    family = encoder_family("clip_vit_b16")
    model = encoder_graph(family.recipe(SIZE, max(CLIP_LAYERS)))
    graph = model.graph
    graph.initializer.extend(
        numpy_helper.from_array(np.asarray([value], np.int64), name)
        for name, value in (("cls.start", 0), ("cls.end", 1))
    )
    outputs = []
    for layer in CLIP_LAYERS:
        tokens = family._layer_output(graph, layer)  # type: ignore[attr-defined]
        patches, square, cls = f"patches{layer}", f"squared{layer}", f"cls_token{layer}"
        graph.node.extend(
            [
                helper.make_node(
                    "Slice", [tokens, "tokens.start", "tokens.end", "tokens.axis"], [patches]
                ),
                helper.make_node("ReduceMean", [patches], [f"mean{layer}"], axes=[1], keepdims=0),
                helper.make_node("Mul", [patches, patches], [square]),
                helper.make_node("ReduceMean", [square], [f"square{layer}"], axes=[1], keepdims=0),
                helper.make_node("Slice", [tokens, "cls.start", "cls.end", "tokens.axis"], [cls]),
                helper.make_node("ReduceMean", [cls], [f"cls{layer}"], axes=[1], keepdims=0),
            ]
        )
        outputs += [f"{stat}{layer}" for stat in STATS]
    del graph.output[:]
    graph.output.extend(helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs)
    _prune(graph, outputs)
    return bytes(model.SerializeToString()), outputs


def extract_clip() -> Path:
    from ai_photo_detector.model.encoders import INPUT_NAME
    from ai_photo_detector.model.runtimes import make_session

    spec = clip_spec()
    graph, outputs = _clip_statistics_graph()
    session = make_session(graph)

    def features_of(views: list[Image.Image]) -> NDArray[np.float32]:
        # One image per run: the INT8 graph is batch-dependent.
        found = [session.run(outputs, {INPUT_NAME: to_model_input(v, spec)[None]}) for v in views]
        shape = (len(CLIP_LAYERS), len(STATS), -1)
        return np.stack([np.stack([f[0] for f in one]).reshape(shape) for one in found])

    features, source, ai = views_of_every_image(spec, features_of)
    OUT.mkdir(exist_ok=True)
    np.savez(CLIP_FILE, features=features, source=source, ai=ai)
    return CLIP_FILE


def extract_efficientnet() -> Path:
    import torch

    from ai_photo_detector.training.timm_weights import create_backbone

    model = create_backbone("tf_efficientnet_lite0").eval()
    spec = PreprocessSpec(
        input_size=224,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        canonical_jpeg_quality=90,
        jpeg_draft=True,
    )
    pooled: dict[int, torch.Tensor] = {}
    for index, stage in enumerate(model.blocks):
        stage.register_forward_hook(
            lambda _m, _i, out, index=index: pooled.__setitem__(index, out.mean(dim=(2, 3)))
        )

    def features_of(views: list[Image.Image]) -> NDArray[np.float32]:
        batch = torch.from_numpy(np.stack([to_model_input(v, spec) for v in views]))
        with torch.inference_mode():
            final = model.forward_head(model.forward_features(batch), pre_logits=True)
        return torch.cat([*(pooled[i] for i in sorted(pooled)), final], dim=-1).numpy()

    features, source, ai = views_of_every_image(spec, features_of)
    widths = [pooled[i].shape[1] for i in sorted(pooled)] + [1280]
    OUT.mkdir(exist_ok=True)
    np.savez(EFFICIENTNET_FILE, features=features, source=source, ai=ai, widths=widths)
    return EFFICIENTNET_FILE


def compare() -> None:
    clip, efficientnet = np.load(CLIP_FILE), np.load(EFFICIENTNET_FILE)
    source, ai = clip["source"], clip["ai"]
    tokens = clip["features"]

    def clip_stat(layer: int, stat: str) -> NDArray[np.float32]:
        at = CLIP_LAYERS.index(layer)
        mean = tokens[:, :, at, 0].astype(np.float32)
        if stat == "std":
            square = tokens[:, :, at, 1].astype(np.float32)
            return np.sqrt(np.maximum(square - mean * mean, 0))
        return tokens[:, :, at, 2].astype(np.float32) if stat == "cls" else mean

    edges = np.cumsum([0, *efficientnet["widths"]])
    stages = efficientnet["features"].astype(np.float32)

    def stage(index: int) -> NDArray[np.float32]:
        return stages[..., edges[index] : edges[index + 1]]

    sets = {
        "CLIP layer 7, mean (shipped)": [clip_stat(7, "mean")],
        "CLIP layer 7, std": [clip_stat(7, "std")],
        "CLIP layer 7, mean + std": [clip_stat(7, "mean"), clip_stat(7, "std")],
        "CLIP layer 7, class token": [clip_stat(7, "cls")],
        "CLIP layer 7, mean + class token": [clip_stat(7, "mean"), clip_stat(7, "cls")],
        "CLIP layers 6 + 7 + 8, mean": [clip_stat(n, "mean") for n in (6, 7, 8)],
        "CLIP layer 8, mean + std": [clip_stat(8, "mean"), clip_stat(8, "std")],
        "EfficientNet stage 5 (of 0-6)": [stage(5)],
        "EfficientNet pre-logits (1280)": [stage(len(edges) - 2)],
        "CLIP layer 7 + EfficientNet stage 3": [clip_stat(7, "mean"), stage(3)],
        "CLIP layer 7 + EfficientNet stage 5": [clip_stat(7, "mean"), stage(5)],
        "CLIP layer 7 + EfficientNet pre-logits": [clip_stat(7, "mean"), stage(len(edges) - 2)],
    }
    header = " | ".join(s.split("-")[0] for s in SOURCES)
    print(f"| features, held out: | {header} | mean |\n|---|---|---|---|---|---|")
    for name, parts in sets.items():
        found = leave_one_out(np.concatenate(parts, axis=-1), ai, source, "none")
        cells = " | ".join(f"{found[s]:.3f}" for s in SOURCES)
        print(f"| {name} | {cells} | {np.mean(list(found.values())):.3f} |", flush=True)
    playground_groups(sets["CLIP layer 7, mean (shipped)"][0], ai, source)


def playground_groups(features: NDArray[np.float32], ai: NDArray[np.bool_], source) -> None:  # type: ignore[no-untyped-def]
    """The head's mean margin (``ai`` positive) per group of held-out playground-mixed, whose
    file names say the group (``city_3.jpg``, ``diffusion2_7.jpg``)."""
    held = "playground-mixed"
    samples = discover([DATASETS / s for s in SOURCES], Settings().data.extensions)
    train, test = np.where(source != held)[0], np.where(source == held)[0]
    margins = _fit_score(features, ai, source, train, test, "none")
    groups = np.asarray([samples[i].path.stem.rsplit("_", 1)[0] for i in test])
    print(f"\n{held} held out, mean margin per group (shipped features):")
    for group in sorted(set(groups)):
        kind = "ai" if ai[test][groups == group][0] else "real"
        print(f"  {group:<11} {kind:<4} {margins[groups == group].mean():+.2f}")


def curve(draws: int = 8, sizes: tuple[int, ...] = (0, 10, 20, 40)) -> None:
    clip = np.load(CLIP_FILE)
    source, ai = clip["source"], clip["ai"]
    features = clip["features"][:, :, CLIP_LAYERS.index(7), 0].astype(np.float32)
    rng = np.random.default_rng(0)

    def auc(
        train: NDArray[np.int64], test: NDArray[np.int64], weighting: str, boost: list[str]
    ) -> float:
        rows = features[train].reshape(-1, features.shape[-1])
        targets = np.repeat(ai[train], VIEWS).astype(np.int64)
        groups = list(zip(np.repeat(source[train], VIEWS), targets, strict=True))
        weight, bias = fit_linear_head(
            rows, targets, 2, 0.01, 0, group_weights(groups, weighting, boost)
        )
        logits = features[test, 0] @ weight.T + bias
        return float(roc_auc_score(ai[test], logits[:, 1] - logits[:, 0]))

    def draw(mine: NDArray[np.int64], k: int) -> NDArray[np.int64]:
        halves = [rng.choice(mine[ai[mine] == label], k // 2, replace=False) for label in (1, 0)]
        return np.concatenate(halves).astype(np.int64)

    print("| held out | head weighting | " + " | ".join(f"k = {k}" for k in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    for held in SOURCES[:3]:  # chatgpt-gemini has 6 real photos: too few to draw from
        mine, others = np.where(source == held)[0], np.where(source != held)[0]
        for name, weighting, boost in (
            ("none", "none", []),
            ("balanced", "balanced", []),
            ("boosted", "none", [held]),
        ):
            cells = []
            for k in sizes:
                found = []
                for _ in range(draws if k else 1):
                    pick = draw(mine, k)
                    train, test = np.concatenate([others, pick]), np.setdiff1d(mine, pick)
                    found.append(auc(train, test, weighting, boost))
                cells.append(
                    f"{np.mean(found):.3f} ± {np.std(found):.3f}" if k else f"{found[0]:.3f}"
                )
            print(f"| {held} | {name} | " + " | ".join(cells) + " |", flush=True)
    small = ["playground-mixed", "chatgpt-gemini"]
    print(f"\nleave one source out with {' and '.join(small)} boosted in training:")
    for held in SOURCES:
        train, test = np.where(source != held)[0], np.where(source == held)[0]
        plain, boosted = auc(train, test, "none", []), auc(train, test, "none", small)
        print(f"  {held:<18} {plain:.3f} unweighted, {boosted:.3f} boosted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "command", choices=["extract-clip", "extract-efficientnet", "compare", "curve"]
    )
    command = parser.parse_args().command
    if command == "compare":
        compare()
    elif command == "curve":
        curve()
    else:
        written = extract_clip() if command == "extract-clip" else extract_efficientnet()
        print(f"features written to {written}")


if __name__ == "__main__":
    main()

"""Does the evidence of a few patches, or an unsupervised alignment of each source, carry over
to unseen sources better than the shipped head on the mean patch token?

    python -m research.token_study extract    # ~2 min on 2 cores: the plain view only
    python -m research.token_study compare

``extract`` keeps all 100 patch tokens of layer 7 (160 px, JPEG 90: the shipped view) for every
image of the four shared sets. ``compare`` prints leave-one-source-out ROC-AUC of the project's
logistic head (C = 0.01) for:

- pooling: the shipped head applied to each patch and its patches' maximum or top 10 taken; a
  patch-level head (every patch labelled as its image, 20 patches an image) scored by the mean,
  median, top 10 or bottom 10 of its patches; the mean token beside the tokens' maximum;
- alignment, without labels: each source's features centred, or standardised, on their own
  statistics (training sources and the held-out one alike), or the held-out source re-coloured
  to the training features' covariance (CORAL). Serving could do the same per marketplace or
  batch, if it helped.

Every row is on the plain view only (no augmented views), the baseline included, so the rows
compare among themselves; the model card quotes them.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score

from ai_photo_detector.data.discovery import discover
from ai_photo_detector.training.backbones.frozen import fit_linear_head
from research.transfer_study import DATASETS, OUT, SOURCES, clip_spec

TOKENS_FILE = OUT / "clip160-layer7-tokens.npz"
PATCHES_PER_IMAGE = 20


def extract() -> None:
    from ai_photo_detector.imaging import decode_image, to_model_input
    from ai_photo_detector.model.encoders import INPUT_NAME, encoder_family, encoder_graph
    from ai_photo_detector.model.runtimes import make_session
    from ai_photo_detector.settings import Settings

    family = encoder_family("clip_vit_b16")
    session = make_session(encoder_graph(family.recipe(160, 7)).SerializeToString())
    spec, settings = clip_spec(), Settings()
    samples = discover([DATASETS / s for s in SOURCES], settings.data.extensions)
    tokens = np.zeros((len(samples), 100, family.width), np.float16)
    began = time.monotonic()
    for i, sample in enumerate(samples):
        image = decode_image(sample.path.read_bytes(), spec).image
        grid = session.run(["features"], {INPUT_NAME: to_model_input(image, spec)[None]})[0][0]
        tokens[i] = grid.reshape(family.width, -1).T  # (C, g, g) -> (patches, C)
        if i % 500 == 0:
            print(f"{i}/{len(samples)} images, {time.monotonic() - began:.0f} s", flush=True)
    ai = [s.label == settings.data.ai_label for s in samples]
    OUT.mkdir(exist_ok=True)
    np.savez(TOKENS_FILE, tokens=tokens, source=[s.source for s in samples], ai=ai)
    print(f"tokens written to {TOKENS_FILE}")


def _direction(features: NDArray[np.float32], ai: NDArray[np.int64]) -> tuple[NDArray, float]:
    weight, bias = fit_linear_head(features, ai, 2, 0.01, 0)
    return weight[1] - weight[0], float(bias[1] - bias[0])


def _top(scores: NDArray[np.float32], k: int) -> NDArray[np.float32]:
    return np.sort(scores, axis=1)[:, -k:].mean(axis=1)


def _bottom(scores: NDArray[np.float32], k: int) -> NDArray[np.float32]:
    return np.sort(scores, axis=1)[:, :k].mean(axis=1)


def pooling_rows(tokens, ai, source) -> dict[str, dict[str, float]]:  # type: ignore[no-untyped-def]
    mean, peak = tokens.mean(axis=1), tokens.max(axis=1)
    both = np.concatenate([mean, peak], axis=1)
    rng = np.random.default_rng(0)
    rows: dict[str, dict[str, float]] = {}

    def add(name: str, held: str, scores: NDArray[np.float32]) -> None:
        rows.setdefault(name, {})[held] = float(roc_auc_score(ai[source == held], scores))

    for held in SOURCES:
        train, test = np.where(source != held)[0], np.where(source == held)[0]
        weight, bias = _direction(mean[train], ai[train])
        add("mean token (shipped head)", held, mean[test] @ weight + bias)
        per_patch = tokens[test] @ weight + bias
        add("shipped head per patch, maximum", held, per_patch.max(axis=1))
        add("shipped head per patch, top 10", held, _top(per_patch, 10))
        picked = rng.integers(0, tokens.shape[1], (len(train), PATCHES_PER_IMAGE))
        patches = tokens[train[:, None], picked].reshape(-1, tokens.shape[2])
        weight, bias = _direction(patches, np.repeat(ai[train], PATCHES_PER_IMAGE))
        per_patch = tokens[test] @ weight + bias
        add("patch-level head, mean", held, per_patch.mean(axis=1))
        add("patch-level head, median", held, np.median(per_patch, axis=1))
        add("patch-level head, top 10", held, _top(per_patch, 10))
        add("patch-level head, bottom 10", held, _bottom(per_patch, 10))
        weight, bias = _direction(both[train], ai[train])
        add("mean token + maximum token", held, both[test] @ weight + bias)
    return rows


def _per_source(features, source, standardise: bool):  # type: ignore[no-untyped-def]
    aligned = features.copy()
    for name in SOURCES:
        mine = source == name
        aligned[mine] -= features[mine].mean(axis=0)
        if standardise:
            aligned[mine] /= features[mine].std(axis=0) + 1e-6
    return aligned


def _coral(train: NDArray[np.float32], test: NDArray[np.float32]) -> NDArray[np.float32]:
    """``test`` whitened with its own covariance and re-coloured with ``train``'s."""

    def root(values: NDArray[np.float32], power: float) -> NDArray[np.float64]:
        covariance = np.cov(values, rowvar=False) + np.eye(values.shape[1])
        eigen, vectors = np.linalg.eigh(covariance)
        return (vectors * np.clip(eigen, 1e-6, None) ** power) @ vectors.T

    centred = test - test.mean(axis=0)
    return centred @ root(test, -0.5) @ root(train, 0.5) + train.mean(axis=0)


def alignment_rows(tokens, ai, source) -> dict[str, dict[str, float]]:  # type: ignore[no-untyped-def]
    mean = tokens.mean(axis=1)
    identity: Callable[[NDArray, NDArray], NDArray] = lambda _train, test: test  # noqa: E731
    variants = {
        "none (shipped)": (mean, identity),
        "each source centred": (_per_source(mean, source, False), identity),
        "each source standardised": (_per_source(mean, source, True), identity),
        "held-out source re-coloured (CORAL)": (mean, _coral),
    }
    rows: dict[str, dict[str, float]] = {}
    for name, (features, adapt) in variants.items():
        for held in SOURCES:
            train, test = source != held, source == held
            weight, _ = _direction(features[train], ai[train])
            scores = adapt(features[train], features[test]) @ weight
            rows.setdefault(name, {})[held] = float(roc_auc_score(ai[test], scores))
    return rows


def compare() -> None:
    loaded = np.load(TOKENS_FILE)
    tokens = loaded["tokens"].astype(np.float32)
    ai, source = loaded["ai"].astype(np.int64), loaded["source"]
    header = " | ".join(s.split("-")[0] for s in SOURCES)
    for title, rows in (
        ("pooling", pooling_rows(tokens, ai, source)),
        ("alignment without labels", alignment_rows(tokens, ai, source)),
    ):
        print(f"\n| {title}, held out: | {header} | mean |\n|---|---|---|---|---|---|")
        for name, found in rows.items():
            cells = " | ".join(f"{found[s]:.3f}" for s in SOURCES)
            print(f"| {name} | {cells} | {np.mean(list(found.values())):.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["extract", "compare"])
    if parser.parse_args().command == "extract":
        extract()
    else:
        compare()


if __name__ == "__main__":
    main()

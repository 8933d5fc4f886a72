"""A frozen packaged encoder with a logistic-regression head: only the head trains.

Features come from the very graph the bundle will serve (built by
:mod:`ai_photo_detector.model.encoders`, on the runtime its recipe names; one image at a time
where its quantisation depends on the batch), so a head fitted here scores through the served
graph exactly as it scored here. A static INT8 recipe first has its activation ranges
calibrated on training images (:meth:`FrozenEncoderBackbone.calibrate`). Every image's features are
extracted once, for its plain view and ``training.feature_views`` augmented views; the many fits
of a leave-one-source-out evaluation then cost only logistic regressions.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ai_photo_detector.data.discovery import Sample
from ai_photo_detector.evaluation.metrics import safe_auc
from ai_photo_detector.imaging import PreprocessSpec, decode_image, to_model_input
from ai_photo_detector.model import bundle as bundle_io
from ai_photo_detector.model.encoders import (
    EncoderFamily,
    calibrate,
    encoder_family,
    encoder_graph,
)
from ai_photo_detector.model.runtimes import open_session
from ai_photo_detector.training.augment import augment
from ai_photo_detector.training.backbones import (
    Backbone,
    FitHistory,
    Outputs,
    register_backbone,
)
from ai_photo_detector.training.weighting import group_weights


@dataclass
class LinearHead:
    """Logits = embedding @ weight.T + bias, the scaler folded in."""

    weight: NDArray[np.float32]  # (labels, D)
    bias: NDArray[np.float32]  # (labels,)
    val_auc: float

    def logits(self, embeddings: NDArray[np.float32]) -> NDArray[np.float32]:
        result: NDArray[np.float32] = embeddings @ self.weight.T + self.bias
        return result


def fit_linear_head(
    features: NDArray[np.float32],
    targets: NDArray[np.int64],
    classes: int,
    c: float,
    seed: int,
    sample_weight: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """A logistic regression on standardised features, class-balanced unless sample weights
    are given, folded back into one weight and bias on the raw features (so the served graph
    needs no scaler)."""
    scaler = StandardScaler().fit(features)
    model = LogisticRegression(
        C=c,
        max_iter=5000,
        class_weight="balanced" if sample_weight is None else None,
        random_state=seed,
    )
    model.fit(scaler.transform(features), targets, sample_weight=sample_weight)
    coef = np.asarray(model.coef_, np.float64)
    intercept = np.asarray(model.intercept_, np.float64)
    if classes == 2:  # one logit for class 1: logits (0, z) give softmax = sigmoid(z)
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    weight = coef / scaler.scale_[None, :]
    bias = intercept - weight @ scaler.mean_
    return weight.astype(np.float32), bias.astype(np.float32)


class FrozenEncoderBackbone(Backbone):
    """Base of the packaged-encoder backbones; a subclass names its encoder family."""

    refits_cheaply = True

    family_name: str
    default_input_size: int
    default_layer: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.family: EncoderFamily = encoder_family(self.family_name)
        tset = self.settings.training
        self.recipe = self.family.recipe(
            self.settings.imaging.input_size or self.default_input_size,
            tset.encoder_layer or self.default_layer,
            tset.encoder_precision,
            tset.encoder_runtime,
            tset.encoder_weight_bits,
            tset.encoder_token_merges,
        )
        self.plain: dict[Path, NDArray[np.float32]] = {}
        self.augmented: dict[Path, list[NDArray[np.float32]]] = {}

    def preprocessing(self) -> PreprocessSpec:
        return PreprocessSpec(
            input_size=self.recipe.input_size,
            mean=self.family.mean,
            std=self.family.std,
            canonical_jpeg_quality=self.settings.imaging.canonical_jpeg_quality,
        )

    # --- features ----------------------------------------------------------------------------

    def calibrate(self, train: list[Sample]) -> None:
        """Static INT8: measure the activation ranges on the plain views of a seeded sample of
        the training images (no labels are read)."""
        if self.recipe.precision != "static_int8" or self.recipe.activation_ranges is not None:
            return
        tset = self.settings.training
        ordered = sorted(train, key=lambda s: str(s.path))
        picked = random.Random(tset.seed).sample(ordered, min(tset.calibration_images, len(train)))
        spec = self.preprocessing()
        self.log(f"calibrating static INT8 activation ranges on {len(picked)} training images")
        arrays = [
            to_model_input(decode_image(s.path.read_bytes(), spec).image, spec) for s in picked
        ]
        batches = (np.stack(arrays[i : i + 16]) for i in range(0, len(arrays), 16))
        self.recipe = calibrate(self.recipe, batches, tset.seed, tset.calibration_quantile)

    def prepare(self, samples: list[Sample]) -> None:
        todo = [s for s in samples if s.path not in self.plain]
        if not todo:
            return
        if self.recipe.precision == "static_int8" and self.recipe.activation_ranges is None:
            raise RuntimeError("calibrate() must run before features are extracted")
        spec = self.preprocessing()
        views = self.settings.training.feature_views
        augment_settings = self.settings.training.augment
        seed = self.settings.training.seed
        session, _ = open_session(
            encoder_graph(self.recipe).SerializeToString(), self.recipe.runtime
        )
        # A batch-dependent graph (dynamic quantisation) sees one image at a time.
        per_run = 16 if self.recipe.batch_independent else 1

        def arrays(index: int) -> list[NDArray[np.float32]]:
            image = decode_image(todo[index].path.read_bytes(), spec).image
            rng = random.Random(f"{seed}:{todo[index].path.name}:{index}")
            images = [image] + [augment(image, augment_settings, rng) for _ in range(views)]
            return [to_model_input(item, spec) for item in images]

        def embed(inputs: list[NDArray[np.float32]]) -> list[NDArray[np.float32]]:
            found: list[NDArray[np.float32]] = []
            for start in range(0, len(inputs), per_run):
                batch = np.stack(inputs[start : start + per_run])
                found.extend(session.run(["embedding"], {"image": batch})[0])
            return [np.asarray(e, np.float32) for e in found]

        advance = self.progress("encoder features (images)", len(todo))
        group = max(1, per_run // (1 + views))
        with ThreadPoolExecutor(max_workers=2) as pool:
            decoded = pool.map(arrays, range(len(todo)))
            for start in range(0, len(todo), group):
                chunk = todo[start : start + group]
                inputs = [next(decoded) for _ in chunk]
                embeddings = embed([array for views_of in inputs for array in views_of])
                for offset, sample in enumerate(chunk):
                    own = embeddings[offset * (1 + views) : (offset + 1) * (1 + views)]
                    self.plain[sample.path] = own[0]
                    self.augmented[sample.path] = own[1:]
                advance(len(chunk))

    def _features(self, samples: list[Sample]) -> NDArray[np.float32]:
        self.prepare(samples)
        return np.stack([self.plain[s.path] for s in samples])

    # --- fitting -----------------------------------------------------------------------------

    def fit(self, train: list[Sample], val: list[Sample]) -> LinearHead:
        self.prepare(train + val)
        index = {label: i for i, label in enumerate(self.labels)}
        rows, targets, groups = [], [], []
        for sample in train:
            for vector in [self.plain[sample.path], *self.augmented[sample.path]]:
                rows.append(vector)
                targets.append(index[sample.label])
                groups.append((sample.source, index[sample.label]))
        tset = self.settings.training
        weight, bias = fit_linear_head(
            np.stack(rows),
            np.asarray(targets),
            len(self.labels),
            tset.head_c,
            tset.seed,
            group_weights(groups, tset.source_weighting, tset.boosted_sources, tset.boost_weight),
        )
        head = LinearHead(weight, bias, float("nan"))
        ai = self.labels.index(self.settings.data.ai_label)
        val_logits = head.logits(self._features(val))
        y_val = np.asarray([s.label == self.settings.data.ai_label for s in val], np.int64)
        scores = val_logits[:, ai] - np.delete(val_logits, ai, axis=1).max(axis=1)
        head.val_auc = safe_auc(y_val, scores)
        return head

    def history(self, fitted: LinearHead) -> FitHistory:
        return FitHistory(best_epoch=0, best_val_auc=fitted.val_auc, epochs=[])

    def outputs(self, fitted: LinearHead, samples: list[Sample]) -> Outputs:
        embeddings = self._features(samples)
        return Outputs(fitted.logits(embeddings), embeddings)

    def export(self, fitted: LinearHead, bundle_dir: Path, check: list[Sample]) -> dict[str, Any]:
        np.savez(bundle_dir / bundle_io.HEAD_FILE, weight=fitted.weight, bias=fitted.bias)
        grid = self.recipe.input_size // self.family.patch
        return {
            "backbone": self.name,
            "onnx": {
                "opset": 14,
                "feature_shape": [self.family.width, grid, grid],
                "embedding_size": self.family.width,
                "batch_independent": self.recipe.batch_independent,
            },
            "encoder": {"recipe": self.recipe.model_dump(mode="json")},
            "explain": {
                "head_weight_shape": list(fitted.weight.shape),
                "head_file": bundle_io.HEAD_FILE,
            },
            "training_details": {
                "head": "logistic regression (standardised features)",
                "head_c": self.settings.training.head_c,
                "feature_views": self.settings.training.feature_views,
                "source_weighting": self.settings.training.source_weighting,
                "boosted_sources": self.settings.training.boosted_sources,
                "encoder_layer": self.recipe.layer,
                "encoder_precision": self.recipe.precision,
                "encoder_runtime": self.recipe.runtime,
                "calibration_quantile": self.settings.training.calibration_quantile,
            },
        }


@register_backbone
class ClipVitB16Backbone(FrozenEncoderBackbone):
    name = "clip_vit_b16"
    description = "CLIP ViT-B/16 (packaged INT8), frozen; mean patch tokens of a middle layer"
    family_name = "clip_vit_b16"
    default_input_size = 160
    default_layer = 7

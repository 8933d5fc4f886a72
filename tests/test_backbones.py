"""Backbones by name: the registry holds both kinds, and a new one is one registration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ai_photo_detector.imaging import PreprocessSpec
from ai_photo_detector.settings import Settings
from ai_photo_detector.training.backbones import (
    BACKBONES,
    Backbone,
    FitHistory,
    Outputs,
    UnknownBackbone,
    backbone_class,
    register_backbone,
)


def test_both_shipped_kinds_are_registered() -> None:
    frozen = backbone_class("clip_vit_b16")
    assert frozen.name == "clip_vit_b16"
    pytest.importorskip("torch")
    assert backbone_class("tf_efficientnet_lite0").name == "tf_efficientnet_lite0"


def test_an_unknown_backbone_is_refused_with_the_registered_names() -> None:
    with pytest.raises(UnknownBackbone, match=r"registered: .*clip_vit_b16"):
        backbone_class("resnet_9000")


def test_settings_choose_the_backbone_and_its_preprocessing() -> None:
    settings = Settings(training={"backbone": "clip_vit_b16"})
    backbone = backbone_class(settings.training.backbone)(settings, ["ai", "real"])
    spec = backbone.preprocessing()
    assert spec.input_size == 160 and spec.canonical_jpeg_quality == 90
    assert spec.mean != (0.5, 0.5, 0.5)  # CLIP's own normalisation, written into the bundle
    wider = Settings(training={"backbone": "clip_vit_b16"}, imaging={"input_size": 224})
    assert backbone_class("clip_vit_b16")(wider, ["ai", "real"]).preprocessing().input_size == 224


def test_a_new_backbone_is_one_class_and_one_decorator() -> None:
    @register_backbone
    class Constant(Backbone):
        name = "constant_for_test"
        description = "answers the same for every image"

        def preprocessing(self) -> PreprocessSpec:
            return PreprocessSpec(input_size=32)

        def fit(self, train: list[Any], val: list[Any]) -> str:
            return "fitted"

        def history(self, fitted: Any) -> FitHistory:
            return FitHistory(best_epoch=0, best_val_auc=0.5)

        def outputs(self, fitted: Any, samples: list[Any]) -> Outputs:
            raise AssertionError("not scored in this test")

        def export(self, fitted: Any, bundle_dir: Path, check: list[Any]) -> dict[str, Any]:
            return {}

    try:
        chosen = backbone_class("constant_for_test")
        assert chosen is Constant
        assert chosen(Settings(), ["ai", "real"]).fit([], []) == "fitted"
    finally:
        BACKBONES.pop("constant_for_test")


def test_source_weighting_evens_out_the_groups_it_is_asked_to() -> None:
    import numpy as np

    from ai_photo_detector.training.weighting import group_weights

    groups = [("big", 0)] * 90 + [("big", 1)] * 60 + [("small", 0)] * 4 + [("small", 1)] * 6
    assert group_weights(groups, "none") is None
    balanced = group_weights(groups, "balanced")
    assert balanced is not None and balanced.mean() == pytest.approx(1.0)
    totals = {g: balanced[[i for i, x in enumerate(groups) if x == g]].sum() for g in set(groups)}
    assert max(totals.values()) == pytest.approx(min(totals.values()))  # every group alike
    sqrt = group_weights(groups, "sqrt")
    assert sqrt is not None
    by_group = {g: sqrt[groups.index(g)] for g in set(groups)}
    # Weight per image goes as 1/sqrt(size): a group's total as sqrt(size).
    assert by_group[("small", 0)] / by_group[("big", 0)] == pytest.approx(np.sqrt(90 / 4))


def test_a_boosted_source_weighs_as_much_as_an_average_group() -> None:
    from ai_photo_detector.training.weighting import group_weights

    groups = [("big", 0)] * 90 + [("big", 1)] * 60 + [("other", 0)] * 30 + [("other", 1)] * 20
    groups += [("feedback", 0)] * 2 + [("feedback", 1)] * 3
    assert group_weights(groups, "none", ["not-in-training"]) is None
    weights = group_weights(groups, "none", ["feedback"])
    assert weights is not None and weights.mean() == pytest.approx(1.0)
    totals = {g: weights[[i for i, x in enumerate(groups) if x == g]].sum() for g in set(groups)}
    ordinary = [t for (source, _), t in totals.items() if source != "feedback"]
    for label in (0, 1):
        assert totals[("feedback", label)] == pytest.approx(sum(ordinary) / len(ordinary))
    # The other groups keep the unweighted fit's proportions: classes balanced overall.
    assert totals[("big", 0)] / totals[("other", 0)] == pytest.approx(90 / 30)
    assert totals[("big", 0)] + totals[("other", 0)] == pytest.approx(
        totals[("big", 1)] + totals[("other", 1)]
    )
    # A stronger boost makes each feedback group weigh that many average groups.
    stronger = group_weights(groups, "none", ["feedback"], boost=3.0)
    assert stronger is not None
    share = {g: stronger[[i for i, x in enumerate(groups) if x == g]].sum() for g in set(groups)}
    usual = [t for (source, _), t in share.items() if source != "feedback"]
    assert share[("feedback", 1)] == pytest.approx(3 * sum(usual) / len(usual))


def test_ten_photos_of_a_boosted_source_teach_the_head_what_they_show() -> None:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from ai_photo_detector.training.backbones.frozen import fit_linear_head
    from ai_photo_detector.training.weighting import group_weights

    rng = np.random.default_rng(0)

    def source(n: int, telling_axis: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 2, n)
        features = rng.normal(size=(n, 8))
        features[:, telling_axis] += np.where(labels == 1, 1.5, -1.5)
        return features.astype(np.float32), labels

    big, big_labels = source(400, 0)
    few, few_labels = source(10, 1)  # a new source where another feature tells the label
    unseen, unseen_labels = source(200, 1)
    groups = [("big", int(t)) for t in big_labels] + [("new", int(t)) for t in few_labels]
    features, labels = np.vstack([big, few]), np.concatenate([big_labels, few_labels])

    def auc_on(boosted: list[str], x: np.ndarray, y: np.ndarray) -> float:
        weight, bias = fit_linear_head(
            features, labels, 2, 0.01, 0, group_weights(groups, "none", boosted)
        )
        logits = x @ weight.T + bias
        return float(roc_auc_score(y, logits[:, 1] - logits[:, 0]))

    assert auc_on([], unseen, unseen_labels) < 0.7  # ten photos among 410 change nothing
    assert auc_on(["new"], unseen, unseen_labels) > 0.9
    assert auc_on(["new"], big, big_labels) > 0.8  # the big source is still told apart

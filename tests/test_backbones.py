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

    from ai_photo_detector.training.backbones.frozen import group_weights

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

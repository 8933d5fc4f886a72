"""The detector network: backbone features, global average pool, one linear head.

A linear head on average-pooled features makes class activation maps exact: the logit of class
c equals the spatial mean of ``w_c . F[:, y, x] + b_c``, so the per-location map sums back to it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ai_photo_detector.training.timm_weights import create_backbone


class Detector(nn.Module):
    backbone: Any  # a timm model: its helpers are not typed

    def __init__(self, backbone: Any, num_classes: int) -> None:
        super().__init__()
        backbone.reset_classifier(0)
        self.backbone = backbone
        self.num_features = int(backbone.num_features)
        self.head = nn.Linear(self.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.backbone.forward_features(x)
        embedding = features.mean(dim=(2, 3))
        return self.head(embedding), features, embedding

    def frozen_modules(self, blocks: int) -> list[nn.Module]:
        """Stem plus the first ``blocks`` stages of an EfficientNet-style backbone."""
        if blocks <= 0 or not hasattr(self.backbone, "blocks"):
            return []
        stem = [
            getattr(self.backbone, n) for n in ("conv_stem", "bn1") if hasattr(self.backbone, n)
        ]
        return stem + list(self.backbone.blocks[:blocks])


def build_detector(
    backbone_name: str, num_classes: int, pretrained: bool = True, weights_path: str = ""
) -> Detector:
    return Detector(create_backbone(backbone_name, pretrained, weights_path), num_classes)

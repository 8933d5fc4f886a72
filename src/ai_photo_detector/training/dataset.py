"""Torch dataset: the shared decode and model-input functions with augmentations between."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset

from ai_photo_detector.data.discovery import Sample
from ai_photo_detector.imaging import PreprocessSpec, decode_image, to_model_input
from ai_photo_detector.settings import AugmentSettings
from ai_photo_detector.training.augment import augment


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    def __init__(
        self,
        samples: list[Sample],
        labels: list[str],
        spec: PreprocessSpec,
        augment_settings: AugmentSettings | None = None,
        seed: int = 0,
    ) -> None:
        self.samples = samples
        self.index = {label: i for i, label in enumerate(labels)}
        self.spec = spec
        self.augment_settings = augment_settings
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[i]
        decoded = decode_image(sample.path.read_bytes(), self.spec)
        image = decoded.image
        if self.augment_settings is not None:
            # Seeded per (seed, epoch, item): reproducible whatever the worker count.
            rng = random.Random(hash((self.seed, self.epoch, i)))
            image = augment(image, self.augment_settings, rng)
        array = to_model_input(image, self.spec)
        return torch.from_numpy(np.ascontiguousarray(array)), self.index[sample.label]

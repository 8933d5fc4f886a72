"""The train loop: AdamW, warm-up then cosine decay, early stopping on validation ROC-AUC."""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler

from ai_photo_detector.evaluation.metrics import safe_auc
from ai_photo_detector.settings import TrainingSettings
from ai_photo_detector.training.dataset import ImageDataset
from ai_photo_detector.training.model import Detector
from ai_photo_detector.training.weighting import group_weights


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float
    val_accuracy: float
    learning_rate: float


@dataclass
class TrainResult:
    best_epoch: int
    best_val_auc: float
    history: list[EpochResult] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _loader(
    dataset: ImageDataset,
    batch_size: int,
    shuffle: bool,
    workers: int,
    seed: int,
    sampler: WeightedRandomSampler | None = None,
) -> DataLoader[tuple[torch.Tensor, int]]:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        persistent_workers=workers > 0,
        drop_last=False,
    )


def weighted_sampler(
    dataset: ImageDataset, settings: TrainingSettings
) -> WeightedRandomSampler | None:
    """Draws training images by their group's weight (``source_weighting``,
    ``boosted_sources``), with replacement; None when every image counts alike. A boosted
    source alone also balances the classes of the other sources, as the frozen head does."""
    groups = [(s.source, dataset.index[s.label]) for s in dataset.samples]
    weights = group_weights(
        groups, settings.source_weighting, settings.boosted_sources, settings.boost_weight
    )
    if weights is None:
        return None
    generator = torch.Generator()
    generator.manual_seed(settings.seed)
    return WeightedRandomSampler(
        weights.tolist(), num_samples=len(groups), replacement=True, generator=generator
    )


def evaluate_loss_auc(
    model: Detector, loader: DataLoader[tuple[torch.Tensor, int]], ai_index: int
) -> tuple[float, float, float]:
    model.eval()
    losses, scores, targets, correct = [], [], [], 0
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    with torch.no_grad():
        for images, labels in loader:
            logits, _, _ = model(images)
            losses.append(float(loss_fn(logits, labels)))
            scores.append(logits.softmax(-1)[:, ai_index].numpy())
            targets.append(labels.numpy())
            correct += int((logits.argmax(-1) == labels).sum())
    y = np.concatenate(targets)
    auc = safe_auc((y == ai_index).astype(np.int64), np.concatenate(scores))
    return sum(losses) / max(1, len(y)), auc, correct / max(1, len(y))


def _set_train_mode(model: Detector, frozen: list[nn.Module]) -> None:
    model.train()
    for module in frozen:
        module.eval()  # frozen layers keep their ImageNet batch-norm statistics


def train(
    model: Detector,
    train_set: ImageDataset,
    val_set: ImageDataset,
    ai_index: int,
    settings: TrainingSettings,
    on_epoch: Callable[[EpochResult], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train in place; the model ends with the weights of its best validation epoch."""
    seed_everything(settings.seed)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    frozen = model.frozen_modules(settings.freeze_blocks)
    for module in frozen:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    head_params = list(model.head.parameters())
    backbone_params = [p for p in model.backbone.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": backbone_params, "lr": settings.learning_rate * settings.backbone_lr_scale},
            {"params": head_params, "lr": settings.learning_rate},
        ],
        weight_decay=settings.weight_decay,
    )
    train_loader = _loader(
        train_set,
        settings.batch_size,
        True,
        settings.workers,
        settings.seed,
        weighted_sampler(train_set, settings),
    )
    val_loader = _loader(val_set, settings.batch_size, False, settings.workers, settings.seed)
    steps_per_epoch = max(1, len(train_loader))
    if settings.max_images:
        steps_per_epoch = min(steps_per_epoch, math.ceil(settings.max_images / settings.batch_size))
    total = steps_per_epoch * settings.epochs
    warmup = int(settings.warmup_epochs * steps_per_epoch)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    loss_fn = nn.CrossEntropyLoss()
    result = TrainResult(best_epoch=-1, best_val_auc=-math.inf)
    best_state = copy.deepcopy(model.state_dict())
    stale = 0
    best_score: tuple[float, float] | None = None
    for epoch in range(settings.epochs):
        train_set.epoch = epoch
        _set_train_mode(model, frozen)
        running, seen = 0.0, 0
        for step, (images, labels) in enumerate(train_loader):
            if step >= steps_per_epoch:
                break
            logits, _, _ = model(images)
            loss = loss_fn(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += float(loss.detach()) * len(labels)
            seen += len(labels)
            if on_batch is not None:
                on_batch(len(labels))
        val_loss, val_auc, val_acc = evaluate_loss_auc(model, val_loader, ai_index)
        epoch_result = EpochResult(
            epoch=epoch,
            train_loss=running / max(1, seen),
            val_loss=val_loss,
            val_auc=val_auc,
            val_accuracy=val_acc,
            learning_rate=float(optimizer.param_groups[-1]["lr"]),
        )
        result.history.append(epoch_result)
        if on_epoch is not None:
            on_epoch(epoch_result)
        # Ties in AUC (common near 1.0) go to the lower validation loss.
        score = (round(val_auc, 4) if not math.isnan(val_auc) else -1.0, -val_loss)
        if best_score is None or score > best_score:
            best_score = score
            result.best_val_auc, result.best_epoch, stale = val_auc, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= settings.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return result

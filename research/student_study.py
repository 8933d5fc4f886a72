"""Can a small CNN stand in for the frozen CLIP encoder? A distillation study, leave one source out.

The student is EfficientNet-Lite0 (ImageNet weights, the fast bundle's backbone) at 224 px with
a linear layer onto CLIP's 768 dimensions, trained to reproduce the shipped default's embedding
(the layer-7 mean token of its static INT8 graph) of the same view, standardised per dimension.
No labels are used to distil, but a fold's student never sees the held-out source's images at
all: otherwise the figure would not be out of source.

Both embeddings then get the same head as the shipped recipe (class-balanced logistic
regression, C = 0.01, on each image's plain and augmented views), fitted on the other sources
and scored on the held-out source's plain views: the ROC-AUC of teacher and student side by side.

    python -m research.student_study extract     # views and teacher embeddings (~3 min)
    python -m research.student_study fold diffusiondb-coco [--epochs 3]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

from ai_photo_detector.data.discovery import discover
from ai_photo_detector.evaluation.metrics import safe_auc
from ai_photo_detector.imaging import PreprocessSpec, decode_image, model_view, normalise
from ai_photo_detector.model.bundle import load_bundle
from ai_photo_detector.model.encoders import encoder_graph
from ai_photo_detector.model.runtimes import open_session
from ai_photo_detector.settings import Settings
from ai_photo_detector.training.augment import augment
from ai_photo_detector.training.backbones.frozen import fit_linear_head

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
SOURCES = ["shoes-midjourney", "diffusiondb-coco", "playground-mixed", "chatgpt-gemini"]
CACHE = ROOT / "research" / "features" / "student_views.npz"
VIEWS = 3  # the plain view and two augmented ones, as the shipped recipe
STUDENT_SIZE = 224
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def extract() -> None:
    settings = Settings()
    bundle = load_bundle(ROOT / "models" / "default")
    assert bundle.manifest.encoder is not None
    recipe = bundle.manifest.encoder.recipe
    teacher_spec = bundle.manifest.preprocessing
    student_spec = PreprocessSpec(
        input_size=STUDENT_SIZE,
        mean=IMAGENET[0],
        std=IMAGENET[1],
        canonical_jpeg_quality=teacher_spec.canonical_jpeg_quality,
    )
    session, _ = open_session(encoder_graph(recipe).SerializeToString(), recipe.runtime)
    samples = discover([DATASETS / s for s in SOURCES], settings.data.extensions)
    teacher = np.zeros((len(samples), VIEWS, 768), np.float32)
    student = np.zeros((len(samples), VIEWS, STUDENT_SIZE, STUDENT_SIZE, 3), np.uint8)
    started = time.perf_counter()
    for index, sample in enumerate(samples):
        image = decode_image(sample.path.read_bytes(), teacher_spec).image
        rng = random.Random(f"0:{sample.path.name}:{index}")
        views = [image] + [augment(image, settings.training.augment, rng) for _ in range(VIEWS - 1)]
        batch = np.stack([normalise(model_view(v, teacher_spec), teacher_spec) for v in views])
        teacher[index] = session.run(["embedding"], {"image": batch})[0]
        for v, view in enumerate(views):
            student[index, v] = np.asarray(model_view(view, student_spec).convert("RGB"))
        if index % 500 == 0:
            print(f"{index}/{len(samples)} images, {time.perf_counter() - started:.0f} s")
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        CACHE,
        sources=np.asarray([s.source for s in samples]),
        labels=np.asarray([s.label for s in samples]),
        teacher=teacher,
        student=student,
    )
    print(f"wrote {CACHE}")


def _student_net():  # type: ignore[no-untyped-def]
    import torch
    from torch import nn

    from ai_photo_detector.training.timm_weights import create_backbone

    backbone = create_backbone("tf_efficientnet_lite0", True, "")
    backbone.reset_classifier(0)
    for module in [backbone.conv_stem, backbone.bn1, *backbone.blocks[:3]]:
        for parameter in module.parameters():
            parameter.requires_grad = False
    return nn.Sequential(backbone, nn.Linear(int(backbone.num_features), 768)), torch


def fold(held_out: str, epochs: int, batch_size: int) -> None:
    data = np.load(CACHE)
    sources, labels = data["sources"], data["labels"]
    teacher, pixels = data["teacher"], data["student"]
    train = np.flatnonzero(sources != held_out)
    test = np.flatnonzero(sources == held_out)
    mean = teacher[train].reshape(-1, 768).mean(0)
    scale = teacher[train].reshape(-1, 768).std(0) + 1e-6
    net, torch = _student_net()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    shift = torch.tensor(IMAGENET[0]).view(1, 3, 1, 1)
    spread = torch.tensor(IMAGENET[1]).view(1, 3, 1, 1)

    def inputs(rows: np.ndarray, views: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(pixels[rows, views]).permute(0, 3, 1, 2).float() / 255.0
        return (x - shift) / spread

    trainable = [p for p in net.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.01)
    pairs = np.asarray([(r, v) for r in train for v in range(VIEWS)])
    steps = epochs * (len(pairs) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 1e-3, total_steps=steps)
    rng = np.random.default_rng(0)
    started, step = time.perf_counter(), 0
    net.train()
    for epoch in range(epochs):
        order = rng.permutation(len(pairs))
        losses = []
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chosen = pairs[order[start : start + batch_size]]
            target = (teacher[chosen[:, 0], chosen[:, 1]] - mean) / scale
            loss = torch.nn.functional.mse_loss(
                net(inputs(chosen[:, 0], chosen[:, 1])), torch.from_numpy(target)
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
            step += 1
        print(
            f"epoch {epoch + 1}: distillation loss {np.mean(losses):.3f} "
            f"({time.perf_counter() - started:.0f} s)"
        )
    net.eval()
    embedded = np.zeros_like(teacher)
    with torch.no_grad():
        everyone = np.arange(len(sources))
        for v in range(VIEWS):
            for start in range(0, len(everyone), 64):
                rows = everyone[start : start + 64]
                out = net(inputs(rows, np.full(len(rows), v))).numpy()
                embedded[rows, v] = out * scale + mean
    cosine = (embedded * teacher).sum(-1) / (
        np.linalg.norm(embedded, axis=-1) * np.linalg.norm(teacher, axis=-1)
    )
    print(f"cosine to the teacher: held-out source {cosine[test].mean():.3f}, "
          f"others {cosine[train].mean():.3f}")  # fmt: skip
    for name, features in (("teacher (CLIP layer 7)", teacher), ("student", embedded)):
        rows = features[train].reshape(-1, 768)
        targets = np.repeat((labels[train] == "real").astype(np.int64), VIEWS)
        weight, bias = fit_linear_head(rows, targets, 2, 0.01, 0)
        logits = features[test, 0] @ weight.T + bias
        auc = safe_auc((labels[test] == "ai").astype(np.int64), logits[:, 0] - logits[:, 1])
        print(f"{held_out} held out, {name}: ROC-AUC {auc:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("extract")
    one = commands.add_parser("fold")
    one.add_argument("source", choices=SOURCES)
    one.add_argument("--epochs", type=int, default=3)
    one.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.command == "extract":
        extract()
    else:
        fold(args.source, args.epochs, args.batch_size)


if __name__ == "__main__":
    main()

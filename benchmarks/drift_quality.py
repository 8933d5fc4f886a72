"""How good are the drift detectors? False alarms on held-out windows, detection on shifts.

Reference: the shipped bundle's drift reference (its validation sample). Held-out windows: the
same model's test split (recomputed: splits are deterministic), never seen in training or
calibration. Shifted windows: the test images recompressed at JPEG 50, downscaled ×0.5, blurred
(σ 1.5), each saved again as JPEG q95 like an ordinary upload, and another dataset
(crops of scikit-image's sample photographs).

Targets: false alarms in ≤ 5 % of held-out windows; detection in ≥ 95 % of shifted windows of
500 images. Run: .venv/bin/python -m benchmarks.drift_quality
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ai_photo_detector.data.discovery import Sample as DataSample
from ai_photo_detector.data.discovery import discover
from ai_photo_detector.data.scan import scan
from ai_photo_detector.data.splits import split_samples
from ai_photo_detector.degrade import downscale, gaussian_blur, jpeg_reencode
from ai_photo_detector.evaluation.scoring import score_samples
from ai_photo_detector.model.bundle import load_bundle
from ai_photo_detector.model.inference import OnnxDetector, decide_label, softmax
from ai_photo_detector.monitoring.drift import DriftConfig, Sample, detect
from ai_photo_detector.settings import Settings
from benchmarks.common import print_table, write_csv

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
NULL_WINDOWS, NULL_SIZE = 100, 200
SHIFT_WINDOWS, SHIFT_SIZE = 40, 500


def test_split(settings: Settings) -> list[DataSample]:
    samples = discover(
        [DATASETS / "shoes-midjourney", DATASETS / "diffusiondb-coco"], settings.data.extensions
    )
    images = scan(samples)
    data = settings.data
    return split_samples(
        images,
        val_fraction=data.val_fraction,
        test_fraction=data.test_fraction,
        seed=data.split_seed,
        near_duplicate_distance=data.near_duplicate_distance,
    )["test"]


def as_sample(detector: OnnxDetector, samples: list[DataSample]) -> Sample:
    manifest = detector.manifest
    scored = score_samples(detector, samples, with_stats=True)
    probs = softmax(scored.logits, manifest.calibration.temperature)
    threshold = manifest.calibration.threshold
    labels = [decide_label(p, manifest.ai_index, threshold, manifest.labels) for p in probs]
    return Sample(probs[:, manifest.ai_index], labels, scored.stats, scored.embeddings)


def shifted_copies(samples: list[DataSample], folder: Path, shift: str) -> list[DataSample]:
    out = []
    for i, sample in enumerate(samples):
        image = Image.open(sample.path).convert("RGB")
        if shift == "jpeg50":
            image = jpeg_reencode(image, 50)
        elif shift == "downscale0.5":
            image = downscale(image, 0.5)
        elif shift == "blur1.5":
            image = gaussian_blur(image, 1.5)
        path = folder / shift / f"{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="JPEG", quality=95)
        out.append(DataSample(path, sample.label, shift))
    return out


def other_dataset(folder: Path, count: int = 300) -> list[DataSample]:
    from skimage import data

    photos = [
        data.astronaut(),
        data.chelsea(),
        data.coffee(),
        data.rocket(),
    ]
    photos += [data.hubble_deep_field(), data.immunohistochemistry(), data.retina(), data.cat()]
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        photo = Image.fromarray(photos[i % len(photos)]).convert("RGB")
        side = int(rng.integers(120, min(photo.size)))
        left = int(rng.integers(0, photo.size[0] - side + 1))
        top = int(rng.integers(0, photo.size[1] - side + 1))
        crop = photo.crop((left, top, left + side, top + side)).resize((256, 256))
        path = folder / "other" / f"{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=int(rng.integers(85, 96)))
        path.write_bytes(buffer.getvalue())
        out.append(DataSample(path, "real", "other"))
    return out


def window(sample: Sample, index: np.ndarray) -> Sample:
    return Sample(
        sample.scores[index],
        [sample.labels[i] for i in index],
        {k: v[index] for k, v in sample.image_stats.items()},
        sample.embeddings[index],
    )


def rates(
    reference: Sample, pool: Sample, windows: int, size: int, replace: bool
) -> dict[str, float]:
    rng = np.random.default_rng(1)
    config = DriftConfig(permutations=100)
    hits = {"any": 0, "score": 0, "image_stats": 0, "labels": 0, "embedding": 0}
    for _ in range(windows):
        index = rng.choice(len(pool), size, replace=replace)
        report = detect(reference, window(pool, index), config)
        hits["any"] += report["drift"]
        for family in report["drifted"]:
            hits[family] += 1
    return {k: v / windows for k, v in hits.items()}


def main() -> None:
    settings = Settings()
    bundle = load_bundle(settings.model)
    detector = OnnxDetector(bundle)
    ref = bundle.manifest.drift_reference
    reference = Sample(
        np.asarray(ref.scores),
        ref.labels,
        {k: np.asarray(v) for k, v in ref.image_stats.items()},
        bundle.embedding_reference(),
    )
    test = test_split(settings)
    rows = []
    held_out = as_sample(detector, test)
    result = rates(reference, held_out, NULL_WINDOWS, NULL_SIZE, replace=False)
    rows.append(
        {
            "windows": f"held-out test, {NULL_WINDOWS}×{NULL_SIZE}",
            "metric": "false alarm rate",
            **result,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pools = {
            shift: shifted_copies(test, folder, shift)
            for shift in ("jpeg50", "downscale0.5", "blur1.5")
        }
        pools["other dataset"] = other_dataset(folder)
        for name, samples in pools.items():
            result = rates(
                reference, as_sample(detector, samples), SHIFT_WINDOWS, SHIFT_SIZE, replace=True
            )
            rows.append(
                {
                    "windows": f"{name}, {SHIFT_WINDOWS}×{SHIFT_SIZE}",
                    "metric": "detection rate",
                    **result,
                }
            )
    print_table(rows)
    print("written", write_csv("drift_quality", rows))


if __name__ == "__main__":
    main()

"""Drift detectors on synthetic data with known shifts (real shifts: benchmarks/drift_quality)."""

from __future__ import annotations

import numpy as np
import pytest

from ai_photo_detector.monitoring.detectors.image_stats import holm
from ai_photo_detector.monitoring.detectors.score import psi
from ai_photo_detector.monitoring.drift import DriftConfig, Sample, detect

CONFIG = DriftConfig(permutations=100)


def sample(
    rng: np.random.Generator,
    n: int,
    score_shift: float = 0.0,
    stat_shift: float = 0.0,
    ai_share: float = 0.5,
    embedding_shift: float = 0.0,
) -> Sample:
    scores = np.clip(rng.beta(2, 2, n) + score_shift, 0, 1)
    labels = ["ai" if rng.random() < ai_share else "real" for _ in range(n)]
    stats = {
        "brightness": rng.normal(0.5 + stat_shift, 0.1, n),
        "contrast": rng.normal(0.2, 0.05, n),
        "saturation": rng.normal(0.3, 0.1, n),
        "sharpness": rng.gamma(2, 0.01, n),
        "jpeg_quality": rng.choice([90.0, 95.0], n),
    }
    embeddings = rng.normal(0, 1, (n, 32)).astype(np.float32)
    embeddings[:, :4] += embedding_shift
    return Sample(scores, labels, stats, embeddings)


def test_same_distribution_rarely_alarms() -> None:
    rng = np.random.default_rng(0)
    reference = sample(rng, 400)
    alarms = sum(detect(reference, sample(rng, 300), CONFIG)["drift"] for _ in range(20))
    assert alarms <= 1


@pytest.mark.parametrize(
    ("shift", "family"),
    [
        ({"score_shift": 0.15}, "score"),
        ({"stat_shift": 0.05}, "image_stats"),
        ({"ai_share": 0.8}, "labels"),
        ({"embedding_shift": 0.5}, "embedding"),
    ],
)
def test_each_family_catches_its_shift(shift: dict[str, float], family: str) -> None:
    rng = np.random.default_rng(1)
    reference = sample(rng, 400)
    report = detect(reference, sample(rng, 300, **shift), CONFIG)
    assert report["drift"] and family in report["drifted"]
    assert report["detectors"][family]["p_value"] < report["family_threshold"]
    assert report["severity"] in {"warning", "critical"}


def test_large_score_shift_is_critical() -> None:
    rng = np.random.default_rng(2)
    report = detect(sample(rng, 400), sample(rng, 300, score_shift=0.4), CONFIG)
    assert report["severity"] == "critical"
    assert report["detectors"]["score"]["psi"] > 0.25


def test_holm_and_psi() -> None:
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    values = np.random.default_rng(3).normal(size=1000)
    assert psi(values, values) == pytest.approx(0.0, abs=1e-9)
    assert psi(values, values + 1) > 0.25


DATASETS = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.mark.skipif(not DATASETS.is_dir(), reason="needs ../shared/datasets")
def test_real_recompression_shift_is_detected_with_the_shipped_reference(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Real photos re-saved at JPEG 50 (a platform starting to recompress uploads) drift away
    from the shipped model's validation reference (false alarms: benchmarks/drift_quality)."""
    from PIL import Image

    from ai_photo_detector.data.discovery import Sample as DataSample
    from ai_photo_detector.evaluation.scoring import score_samples
    from ai_photo_detector.model.bundle import load_bundle
    from ai_photo_detector.model.inference import OnnxDetector, decide_label, softmax
    from ai_photo_detector.monitoring.windows import reference_sample
    from conftest import SHIPPED_MODEL

    bundle = load_bundle(SHIPPED_MODEL)
    detector = OnnxDetector(bundle)
    manifest = bundle.manifest
    originals = []
    for source in ("shoes-midjourney", "diffusiondb-coco"):
        for label in ("real", "ai"):
            for path in sorted((DATASETS / source / label).iterdir())[-40:]:
                originals.append(DataSample(path, label, source))
    recompressed = []
    for i, sample in enumerate(originals):
        target = tmp_path / f"{i}.jpg"
        Image.open(sample.path).convert("RGB").save(target, format="JPEG", quality=50)
        recompressed.append(DataSample(target, sample.label, "recompressed"))

    def window(samples: list[DataSample]) -> Sample:
        scored = score_samples(detector, samples, with_stats=True)
        probs = softmax(scored.logits, manifest.calibration.temperature)
        labels = [
            decide_label(p, manifest.ai_index, manifest.calibration.threshold, manifest.labels)
            for p in probs
        ]
        return Sample(probs[:, manifest.ai_index], labels, scored.stats, scored.embeddings)

    reference = reference_sample(bundle)
    shifted = detect(reference, window(recompressed), CONFIG)
    assert shifted["drift"] and "image_stats" in shifted["drifted"]
    quality = shifted["detectors"]["image_stats"]["per_stat"]["jpeg_quality"]
    assert quality["live_median"] == 50 and quality["p_adjusted"] < 1e-6


def test_reference_statistics_measured_another_way_are_not_compared(bundle_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A bundle whose reference statistics were measured on another basis (an older bundle)
    gets no image-statistics test, rather than false alarms; the other families still run."""
    import json
    import shutil

    from ai_photo_detector.image_stats import LEGACY_STATS_BASIS, STAT_NAMES, STATS_BASIS
    from ai_photo_detector.model.bundle import load_bundle
    from ai_photo_detector.monitoring.windows import reference_sample

    current = reference_sample(load_bundle(bundle_dir))
    assert load_bundle(bundle_dir).manifest.drift_reference.image_stats_basis == STATS_BASIS
    assert set(current.image_stats) == set(STAT_NAMES)

    old = shutil.copytree(bundle_dir, tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["drift_reference"]["image_stats_basis"]  # as written before it was recorded
    (old / "manifest.json").write_text(json.dumps(manifest))
    bundle = load_bundle(old)
    assert bundle.manifest.drift_reference.image_stats_basis == LEGACY_STATS_BASIS
    reference = reference_sample(bundle)
    assert reference.image_stats == {}
    report = detect(reference, current, CONFIG)
    assert report["detectors"]["image_stats"]["skipped"]
    assert report["detectors"]["image_stats"]["p_value"] == 1.0
    assert "score" in report["detectors"] and "embedding" in report["detectors"]


def test_a_new_detector_is_one_registration_and_counts_in_the_correction() -> None:
    from ai_photo_detector.monitoring.detectors import (
        DETECTORS,
        DetectorResult,
        DriftDetector,
        register_detector,
    )

    rng = np.random.default_rng(0)

    def sample(n: int) -> Sample:
        return Sample(
            rng.uniform(0, 1, n),
            ["ai", "real"] * (n // 2),
            {},
            rng.normal(size=(n, 4)).astype(np.float32),
        )

    @register_detector
    class AlwaysAlarmed(DriftDetector):
        name = "always_alarmed"

        def run(
            self, reference: Sample, live: Sample, config: DriftConfig, threshold: float
        ) -> DetectorResult:
            return DetectorResult(0.0, statistics={"size_ratio": len(live) / len(reference)})

    try:
        report = detect(sample(200), sample(100), DriftConfig(alpha=0.05))
        assert report["family_threshold"] == 0.05 / len(DETECTORS) == 0.01  # five detectors
        assert "always_alarmed" in report["drifted"]
        assert report["detectors"]["always_alarmed"] == {
            "p_value": 0.0,
            "size_ratio": 0.5,
            "drift": True,
        }
        assert report["statistics"]["always_alarmed"] == {"size_ratio": 0.5}
    finally:
        DETECTORS.pop("always_alarmed")

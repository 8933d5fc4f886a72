"""The reviewed kind: photos like the reviewed feedback get a looser 'ai' band, and only they."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from ai_photo_detector.evaluation.by_source import HeldOutSource, source_table
from ai_photo_detector.evaluation.finalize import CalibrationData, fit_calibration
from ai_photo_detector.evaluation.made_from import load_held_out
from ai_photo_detector.model.bundle import Bands, load_bundle
from ai_photo_detector.model.inference import (
    REVIEWED_KIND,
    UNFAMILIAR,
    OnnxDetector,
    band_of,
    verdicts,
)
from ai_photo_detector.model.reviewed_kind import MIN_REVIEWED, ReviewedKind, fit_reviewed_kind
from ai_photo_detector.settings import Settings
from conftest import quick_settings
from helpers import build_dataset


def _clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training data spread wide in 48 dimensions, and a new kind offset along a few of them:
    40 reviewed photos of it and 200 more."""
    rng = np.random.default_rng(seed)
    rest = rng.normal(0, 1, (1500, 48))
    shift = np.zeros(48)
    shift[:4] = 2.5
    new = rng.normal(0, 1, (240, 48)) + shift
    return rest, new[:40], new[40:]


def test_the_kind_is_told_apart_from_the_rest_and_its_bound_follows_the_quantile() -> None:
    rest, reviewed, more = _clusters()
    kind = fit_reviewed_kind(rest, reviewed, quantile=0.5)
    assert kind is not None and kind.reviewed == 40 and kind.quantile == 0.5
    unseen_rest = np.random.default_rng(9).normal(0, 1, (1000, 48))
    of_kind = kind.flags(more).mean()
    assert 0.3 <= of_kind <= 0.9  # about half of the kind, as the left-out reviewed photos were
    assert kind.flags(unseen_rest).mean() < 0.05  # and few of anything else
    wider = fit_reviewed_kind(rest, reviewed, quantile=0.9)
    assert wider is not None and wider.bound < kind.bound
    assert wider.flags(more).mean() > of_kind
    # The stored arrays give the same answers (what serving loads).
    again = ReviewedKind.from_arrays(kind.arrays())
    assert np.array_equal(again.flags(more), kind.flags(more))
    assert (again.reviewed, again.quantile) == (40, 0.5)


def test_too_few_reviewed_photos_tell_no_kind() -> None:
    rest, reviewed, _ = _clusters()
    assert fit_reviewed_kind(rest, reviewed[: MIN_REVIEWED - 1], 0.5) is None


def test_the_reviewed_band_must_lie_between_the_others() -> None:
    assert Bands(real_below=0.2, ai_from=0.9, ai_from_reviewed=0.7).ai_from_for(True) == 0.7
    assert Bands(real_below=0.2, ai_from=0.9).ai_from_for(True) == 0.9
    with pytest.raises(ValidationError):
        Bands(real_below=0.2, ai_from=0.9, ai_from_reviewed=0.95)
    with pytest.raises(ValidationError):
        Bands(real_below=0.5, ai_from=0.9, ai_from_reviewed=0.4)


def _out_of_source(seed: int = 0) -> CalibrationData:
    """Two sources' out-of-source logits (binary: real, ai), one with hard real photos."""
    rng = np.random.default_rng(seed)
    parts, labels, sources = [], [], []
    for source, real_mean in (("easy", -3.0), ("hard", -1.0)):
        for label, mean in (("real", real_mean), ("ai", 2.0)):
            ai_logit = rng.normal(mean, 1.5, 300)
            parts.append(np.stack([np.zeros(300), ai_logit], axis=1))
            labels += [label] * 300
            sources += [source] * 300
    return CalibrationData(
        np.concatenate(parts).astype(np.float32), labels, sources, "out_of_source"
    )


def test_calibration_sets_the_reviewed_band_at_its_own_share_on_every_source() -> None:
    data = _out_of_source()
    settings = Settings()
    plain = fit_calibration(data, ["real", "ai"], "ai", settings)
    assert "ai_from_reviewed" not in plain["bands"] and plain["reviewed_ai_band_fpr"] is None
    fitted = fit_calibration(data, ["real", "ai"], "ai", settings, reviewed_kind=True)
    bands = fitted["bands"]
    assert bands["ai_from"] == plain["bands"]["ai_from"]  # the band for everything else stays
    assert bands["real_below"] <= bands["ai_from_reviewed"] < bands["ai_from"]
    p_ai = 1 / (1 + np.exp(-data.logits[:, 1] / fitted["temperature"]))
    real = np.asarray(data.labels) == "real"
    for source in ("easy", "hard"):
        mine = real & (np.asarray(data.sources) == source)
        assert (p_ai[mine] >= bands["ai_from_reviewed"]).mean() <= 0.05
        assert (p_ai[mine] >= bands["ai_from"]).mean() <= 0.02
    off = Settings(calibration={"reviewed_ai_band_fpr": None})
    assert "ai_from_reviewed" not in fit_calibration(data, ["real", "ai"], "ai", off, True)["bands"]


def test_source_rows_apply_the_reviewed_band_to_the_photos_of_the_kind() -> None:
    """A held-out source's row counts the looser band for its photos of the kind, so the gates
    see what it costs on sources the model never saw."""
    data = _out_of_source()
    folds = []
    for source in ("easy", "hard"):
        rows = np.asarray(data.sources) == source
        folds.append(
            HeldOutSource(
                source,
                [label for label, keep in zip(data.labels, rows, strict=True) if keep],
                data.logits[rows],
                np.zeros(int(rows.sum()), bool),
            )
        )

    def fit(others: list[HeldOutSource]) -> dict:
        if not others:
            return {}
        sub = CalibrationData(
            np.concatenate([f.logits for f in others]),
            [label for f in others for label in f.labels],
            [f.source for f in others for _ in f.labels],
            "out_of_source",
        )
        # With one other source the label threshold (2 % of its real photos) would bind both
        # bands; a looser one leaves them to the band rules.
        looser = Settings(calibration={"target_fpr": 0.05})
        return fit_calibration(sub, ["real", "ai"], "ai", looser, reviewed_kind=True)

    before = {r["source"]: r for r in source_table(folds, fit, 1, "ai", "real")["rows"]}
    for fold in folds:
        fold.reviewed_kind = np.ones(len(fold.labels), bool)
    after = {r["source"]: r for r in source_table(folds, fit, 1, "ai", "real")["rows"]}
    for source in ("easy", "hard"):
        assert "reviewed_kind" not in before[source]
        assert after[source]["reviewed_kind"] == 600
        assert after[source]["ai_band_tpr"] > before[source]["ai_band_tpr"]
        assert after[source]["ai_band_fpr"] >= before[source]["ai_band_fpr"]


def test_only_photos_of_the_kind_and_familiar_meet_the_reviewed_band(frozen_bundle: Path) -> None:
    manifest = load_bundle(frozen_bundle).manifest
    loose = Bands(real_below=0.2, ai_from=0.8, ai_from_reviewed=0.5)
    calibration = manifest.calibration.model_copy(update={"bands": loose})
    manifest = manifest.model_copy(update={"calibration": calibration})
    between = 0.65
    assert band_of(between, manifest, reviewed_kind=True) == "ai"
    assert band_of(between, manifest) == "uncertain"
    ai = manifest.ai_index
    row = np.zeros(len(manifest.labels))
    row[ai] = manifest.calibration.temperature * np.log(between / (1 - between))
    rows = np.stack([row, row, row])
    plain, of_kind, strange = verdicts(
        rows, manifest, unfamiliar=[False, False, True], reviewed_kind=[False, True, True]
    )
    assert (plain.band, of_kind.band, strange.band) == ("uncertain", "ai", "uncertain")
    assert of_kind.reasons == (REVIEWED_KIND,)  # the answer says why it is 'ai' this low
    assert strange.reasons == (UNFAMILIAR,)
    high = row.copy()
    high[ai] = manifest.calibration.temperature * np.log(0.9 / 0.1)
    (confident,) = verdicts(high[None], manifest, reviewed_kind=[True])
    assert confident.band == "ai" and confident.reasons == ()  # any photo's band holds it


def test_a_retrain_on_reviews_serves_the_kind_its_folds_measured(
    tmp_path_factory: pytest.TempPathFactory, two_sources: list[Path]
) -> None:
    """End to end: the bundle carries the kind and its band; every fold says which of its
    photos were of its own kind; the served detector finds the reviewed source's photos of the
    kind far more often than the other source's."""
    from ai_photo_detector.training.pipeline import run_training

    tmp = tmp_path_factory.mktemp("reviewed-kind")
    sources = [*two_sources, build_dataset(tmp / "gamma", per_class=24, seed=2)]
    settings = quick_settings(
        tmp,
        training={"backbone": "clip_vit_b16", "feature_views": 1, "boosted_sources": ["beta"]},
        mlflow={"enabled": False},
    )
    outcome = run_training(sources, settings, version="kind", log=lambda _: None)
    bundle = load_bundle(outcome.bundle_dir)
    manifest = bundle.manifest
    splits = json.loads((outcome.run_dir / "splits.json").read_text())
    reviewed = [p for name in ("train", "val") for p in splits[name] if "beta" in Path(p).parts]
    assert manifest.reviewed_kind is not None and manifest.reviewed_kind.reviewed == len(reviewed)
    bands = manifest.calibration.bands
    assert bands.ai_from_reviewed is not None and bands.ai_from_reviewed <= bands.ai_from
    assert manifest.calibration.reviewed_ai_band_fpr == 0.05
    folds = {fold.source: fold for fold in load_held_out(outcome.run_dir)}
    # alpha's fold told beta's reviewed photos from gamma's, beta's parts the rest of beta
    # from alpha's and gamma's.
    assert all(fold.reviewed_kind is not None for fold in folds.values())
    assert folds["beta"].reviewed_kind.mean() > folds["alpha"].reviewed_kind.mean()
    rows = {r["source"]: r for r in manifest.metrics["leave_one_source_out"]["rows"]}
    assert rows["alpha"]["reviewed_kind"] == int(folds["alpha"].reviewed_kind.sum())
    detector = OnnxDetector(bundle, lanes=False)
    assert detector.reviewed_kind is not None
    embeddings = {
        fold.source: np.concatenate([_embedding(detector, Path(path)) for path in fold.paths])
        for fold in folds.values()
    }
    assert (
        detector.of_reviewed_kind(embeddings["beta"]).mean()
        > detector.of_reviewed_kind(embeddings["alpha"]).mean()
    )


def _embedding(detector: OnnxDetector, path: Path) -> np.ndarray:
    from ai_photo_detector.imaging import preprocess_bytes

    array, _ = preprocess_bytes(path.read_bytes(), detector.manifest.preprocessing)
    return detector.run(array[None]).embedding

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ai_photo_detector.data.discovery import DatasetError, discover
from ai_photo_detector.data.scan import scan
from ai_photo_detector.data.splits import split_samples
from ai_photo_detector.data.validate import build_report, summary_text
from ai_photo_detector.settings import DataSettings
from helpers import build_dataset, encode, smooth_image

SETTINGS = DataSettings()


def _with_problems(root: Path) -> Path:
    """A dataset with planted duplicates, a truncated file, a tiny image and a shortcut."""
    build_dataset(root, per_class=20, real_quality=95, ai_quality=90)
    real = sorted((root / "real").iterdir())
    shutil.copy(real[0], root / "real" / "exact_copy.jpg")
    with Image.open(real[1]) as image:  # near-duplicate: resized and re-encoded
        near = image.resize((90, 90))
        (root / "real" / "near_copy.jpg").write_bytes(encode(near, "JPEG", quality=95))
    data = real[2].read_bytes()
    (root / "real" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "real" / "not_an_image.jpg").write_bytes(b"hello, I am text")
    tiny = smooth_image(np.random.default_rng(5), 24)
    (root / "ai" / "tiny.jpg").write_bytes(encode(tiny, "JPEG", quality=90))
    return root


def test_report_flags_planted_problems(tmp_path: Path) -> None:
    root = _with_problems(tmp_path / "set")
    images = scan(discover([root], SETTINGS.extensions))
    report = build_report(images, SETTINGS)
    unreadable = {Path(p["path"]).name: p["code"] for p in report["unreadable"]}
    assert set(unreadable) == {"truncated.jpg", "not_an_image.jpg"}
    assert {Path(t["path"]).name for t in report["tiny_images"]} == {"tiny.jpg"}
    exact_names = {Path(p).name for group in report["exact_duplicates"] for p in group["paths"]}
    assert "exact_copy.jpg" in exact_names
    near_names = {Path(n["a"]).name for n in report["near_duplicates"]} | {
        Path(n["b"]).name for n in report["near_duplicates"]
    }
    assert "near_copy.jpg" in near_names
    audit = report["shortcut_audit"]["all"]
    assert audit["status"] == "alarm"
    assert audit["strongest_feature"] == "jpeg_quality"
    assert audit["per_feature_auc"]["jpeg_quality"] > 0.95
    assert "SHORTCUT" in summary_text(report)
    assert report["findings"][0]["level"] == "alarm"


def test_no_shortcut_when_metadata_is_uninformative(tmp_path: Path) -> None:
    root = build_dataset(tmp_path / "fair", per_class=20, real_quality=92, ai_quality=92)
    report = build_report(scan(discover([root], SETTINGS.extensions)), SETTINGS)
    assert report["shortcut_audit"]["all"]["per_feature_auc"]["jpeg_quality"] == 0.5


def test_splits_are_deterministic_and_keep_duplicates_together(tmp_path: Path) -> None:
    root = _with_problems(tmp_path / "set")
    images = scan(discover([root], SETTINGS.extensions))
    kwargs = {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 3, "near_duplicate_distance": 6}
    first = split_samples(images, **kwargs)
    again = split_samples(list(reversed(images)), **kwargs)
    assert {k: [s.path for s in v] for k, v in first.items()} == {
        k: [s.path for s in v] for k, v in again.items()
    }
    where = {s.path.name: name for name, items in first.items() for s in items}
    real = sorted(p.name for p in (root / "real").iterdir() if p.name.startswith("real_"))
    assert where["exact_copy.jpg"] == where[real[0]]
    assert where["near_copy.jpg"] == where[real[1]]
    assert "truncated.jpg" not in where  # unreadable files never reach training
    assert all(len(items) > 0 for items in first.values())


def test_csv_manifest_and_several_datasets_combine(tmp_path: Path) -> None:
    first = build_dataset(tmp_path / "one", per_class=3)
    second = build_dataset(tmp_path / "two", per_class=2, extra_labels=("edited",))
    manifest = tmp_path / "extra.csv"
    manifest.write_text(
        "path,label\n" + "".join(f"{p},ai\n" for p in sorted((first / "ai").iterdir()))
    )
    samples = discover([first, second, manifest], SETTINGS.extensions)
    assert {s.label for s in samples} == {"real", "ai", "edited"}
    assert {s.source for s in samples} == {"one", "two", "extra"}
    assert len(samples) == 6 + 6 + 3


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    try:
        discover([tmp_path / "nowhere"], SETTINGS.extensions)
    except DatasetError as exc:
        assert "nowhere" in str(exc)
    else:
        raise AssertionError("expected a DatasetError")


def test_processed_views_carry_no_metadata_shortcut(tmp_path: Path) -> None:
    """A set whose labels differ in JPEG quality and in size: the raw files give the label
    away; the views training learns from (resized, re-encoded alike) do not."""
    from ai_photo_detector.imaging import PreprocessSpec

    root = build_dataset(tmp_path / "set", per_class=20, real_quality=95, ai_quality=90)
    for path in sorted((root / "real").iterdir()):  # real photos also larger, as in the wild
        with Image.open(path) as image:
            path.write_bytes(encode(image.resize((160, 160)), "JPEG", quality=95))
    spec = PreprocessSpec(input_size=64, canonical_jpeg_quality=90)
    images = scan(discover([root], SETTINGS.extensions), view_spec=spec)
    report = build_report(images, SETTINGS)
    assert report["shortcut_audit"]["all"]["metadata_roc_auc"] >= 0.95
    for scope, result in report["processed_view_audit"].items():
        assert result["metadata_roc_auc"] <= SETTINGS.processed_max_auc, scope
    assert any("no metadata shortcut" in f["message"] for f in report["findings"])
    assert set(report["processed_view_size_auc"]) >= {"all"}

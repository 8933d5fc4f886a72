from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ai_photo_detector.model.bundle import BundleError, load_bundle


@pytest.fixture
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(bundle_dir, target)
    return target


def test_valid_bundle_loads(bundle_copy: Path) -> None:
    assert load_bundle(bundle_copy).manifest.name == "ai-photo-detector"


def test_truncated_model_fails_checksum(bundle_copy: Path) -> None:
    model = bundle_copy / "model.onnx"
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(BundleError, match=r"checksum mismatch for model\.onnx"):
        load_bundle(bundle_copy)


def test_missing_file_is_reported(bundle_copy: Path) -> None:
    (bundle_copy / "drift_reference.npz").unlink()
    with pytest.raises(BundleError, match=r"drift_reference\.npz is missing"):
        load_bundle(bundle_copy)


def test_truncated_manifest_is_reported(bundle_copy: Path) -> None:
    manifest = bundle_copy / "manifest.json"
    manifest.write_text(manifest.read_text()[:200])
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle_copy)


def test_foreign_json_is_reported(bundle_copy: Path) -> None:
    (bundle_copy / "manifest.json").write_text(json.dumps({"name": "some other tool"}))
    with pytest.raises(BundleError, match="not an ai-photo-detector bundle"):
        load_bundle(bundle_copy)


def test_schema_errors_are_reported(bundle_copy: Path) -> None:
    path = bundle_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["calibration"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="calibration"):
        load_bundle(bundle_copy)


def test_newer_schema_version_is_refused(bundle_copy: Path) -> None:
    path = bundle_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["schema_version"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema_version 99"):
        load_bundle(bundle_copy)


def test_not_a_bundle_folder(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        load_bundle(tmp_path)
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "missing")

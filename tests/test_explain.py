"""Class activation maps from the bundle's shipped head: exact, for trained and old bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ai_photo_detector.cli import app
from ai_photo_detector.imaging import preprocess_bytes
from ai_photo_detector.model.bundle import HEAD_FILE, BundleError, load_bundle, write_manifest
from ai_photo_detector.model.inference import OnnxDetector, class_activation_maps
from conftest import FAST_MODEL, SHIPPED_MODEL
from helpers import encode, patterned_image, smooth_image


def _batch(bundle_path: Path) -> np.ndarray:
    spec = load_bundle(bundle_path).manifest.preprocessing
    rng = np.random.default_rng(7)
    images = [smooth_image(rng, 300), patterned_image(rng, 300), smooth_image(rng, 500)]
    return np.stack([preprocess_bytes(encode(image), spec)[0] for image in images])


def _assert_maps_explain_the_logits(bundle_path: Path) -> None:
    bundle = load_bundle(bundle_path)
    output = OnnxDetector(bundle).run(_batch(bundle_path), with_features=True)
    assert output.features is not None
    maps = class_activation_maps(output.features, *bundle.head())
    classes, channels, height, width = (len(bundle.manifest.labels), *output.features.shape[1:])
    assert maps.shape == (3, classes, height, width)
    assert channels == bundle.manifest.explain.head_weight_shape[1]
    # The head is linear on the mean of the feature map: each map averages to its logit.
    np.testing.assert_allclose(maps.mean(axis=(2, 3)), output.logits, rtol=1e-4, atol=1e-4)
    # ...and says where, not one value everywhere: the AI label's margin varies by region.
    ai = bundle.manifest.ai_index
    margin = maps[:, ai] - np.delete(maps, ai, axis=1).max(axis=1)
    assert np.ptp(margin, axis=(1, 2)).min() > 0


@pytest.mark.parametrize(
    "bundle_path",
    [SHIPPED_MODEL, FAST_MODEL, FAST_MODEL.with_name("fast-int8")],
    ids=["default", "fast", "fast-int8"],
)
def test_the_shipped_models_explain_their_logits_exactly(bundle_path: Path) -> None:
    _assert_maps_explain_the_logits(bundle_path)


def test_training_ships_the_head_with_the_bundle(bundle_dir: Path) -> None:
    assert load_bundle(bundle_dir).manifest.explain.head_file == HEAD_FILE
    _assert_maps_explain_the_logits(bundle_dir)


def test_an_old_bundle_without_its_head_is_upgraded(bundle_dir: Path, tmp_path: Path) -> None:
    old = shutil.copytree(bundle_dir, tmp_path / "old")
    (old / HEAD_FILE).unlink()
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["explain"]["head_file"]  # as written before heads shipped
    write_manifest(old, {k: v for k, v in manifest.items() if k != "files"})
    with pytest.raises(BundleError, match="optimize"):
        load_bundle(old).head()

    result = CliRunner().invoke(app, ["optimize", str(old)])
    assert result.exit_code == 0, result.output
    assert "head.npz" in result.output
    _assert_maps_explain_the_logits(old)
    original, upgraded = load_bundle(bundle_dir).head(), load_bundle(old).head()
    for a, b in zip(original, upgraded, strict=True):
        np.testing.assert_array_equal(a, b)  # read from the graph: the same numbers


def test_a_head_that_does_not_match_the_manifest_is_refused(
    bundle_dir: Path, tmp_path: Path
) -> None:
    copy = shutil.copytree(bundle_dir, tmp_path / "copy")
    weight, bias = load_bundle(copy).head()
    np.savez(copy / HEAD_FILE, weight=weight[:, :-1], bias=bias)
    manifest = json.loads((copy / "manifest.json").read_text())
    write_manifest(copy, {k: v for k, v in manifest.items() if k != "files"})  # checksums pass
    with pytest.raises(BundleError, match="head_weight_shape"):
        load_bundle(copy).head()


def test_the_explain_command_matches_predict_and_writes_the_overlay(tmp_path: Path) -> None:
    from PIL import Image

    photo = tmp_path / "listing.jpg"
    photo.write_bytes(encode(patterned_image(np.random.default_rng(4), 400), quality=90))
    overlay = tmp_path / "overlay.jpg"
    runner = CliRunner()
    explained = runner.invoke(
        app,
        ["explain", str(photo), "--model", str(SHIPPED_MODEL), "--out", str(overlay), "--json"],
    )
    assert explained.exit_code == 0, explained.output
    result = json.loads(explained.output)
    predicted = json.loads(
        runner.invoke(app, ["predict", str(photo), "--model", str(SHIPPED_MODEL), "--json"]).output
    )
    assert (result["label"], result["band"]) == (predicted["label"], predicted["band"])
    assert result["probability"] == pytest.approx(predicted["probability"], abs=1e-5)
    assert np.asarray(result["grid"]).mean() == pytest.approx(result["margin"], abs=1e-4)
    with Image.open(overlay) as picture:
        size = load_bundle(SHIPPED_MODEL).manifest.preprocessing.input_size
        assert picture.format == "JPEG" and picture.size == (size, size)
    readable = runner.invoke(app, ["explain", str(photo), "--model", str(SHIPPED_MODEL)])
    assert readable.exit_code == 0
    assert "logit margin" in " ".join(readable.output.split())  # the console wraps long lines

    text = tmp_path / "notes.jpg"
    text.write_text("not an image at all")
    refused = runner.invoke(app, ["explain", str(text), "--model", str(SHIPPED_MODEL)])
    assert refused.exit_code == 1 and "notes.jpg" in refused.output

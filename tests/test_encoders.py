"""Packaged encoders: the registry, the built graph, its verification and its cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ai_photo_detector.model.encoders import (
    ENCODERS,
    EncoderError,
    encoder_family,
    probe_input,
    served_graph,
    verified_source,
)

CLIP = encoder_family("clip_vit_b16")


def test_registry_names_the_packaged_encoder_and_refuses_unknown_ones() -> None:
    assert "clip_vit_b16" in ENCODERS
    with pytest.raises(EncoderError, match="unknown encoder family 'vit_huge'"):
        encoder_family("vit_huge")


def test_recipe_refuses_impossible_layers_and_sizes() -> None:
    with pytest.raises(EncoderError, match=r"layers 1\.\.12"):
        CLIP.recipe(160, 13)
    with pytest.raises(EncoderError, match="multiple of 16"):
        CLIP.recipe(150, 7)


def test_served_graph_computes_the_head_on_the_mean_patch_token(tmp_path: Path) -> None:
    recipe = CLIP.recipe(64, 3)
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(2, CLIP.width)).astype(np.float32)
    bias = np.asarray([0.5, -0.5], np.float32)
    path = served_graph(recipe, weight, bias, cache=tmp_path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits, features, embedding = session.run(
        ["logits", "features", "embedding"], {"image": probe_input(64)}
    )
    assert features.shape == (1, CLIP.width, 4, 4) and embedding.shape == (1, CLIP.width)
    assert np.abs(features.mean(axis=(2, 3)) - embedding).max() < 1e-5
    assert np.abs(logits - (embedding @ weight.T + bias)).max() < 1e-4


def test_built_graph_is_cached_and_rebuilt_when_the_package_file_changes(tmp_path: Path) -> None:
    recipe = CLIP.recipe(64, 2)
    weight, bias = np.ones((2, CLIP.width), np.float32), np.zeros(2, np.float32)
    first = served_graph(recipe, weight, bias, cache=tmp_path)
    assert isinstance(first, str) and Path(first).is_file()
    # Readable by other users: an image builds it as root and serves it as uid 10001.
    assert Path(first).stat().st_mode & 0o044 == 0o044
    stamp = Path(first).with_suffix(".json")
    assert served_graph(recipe, weight, bias, cache=tmp_path) == first
    stamp.write_text('{"source": "elsewhere", "size": 1, "mtime_ns": 1}')
    os.utime(first, ns=(1, 1))
    assert served_graph(recipe, weight, bias, cache=tmp_path) == first
    assert stamp.read_text() != '{"source": "elsewhere", "size": 1, "mtime_ns": 1}'


def test_unwritable_cache_serves_the_graph_from_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    recipe = CLIP.recipe(64, 1)
    built = served_graph(
        recipe,
        np.ones((2, CLIP.width), np.float32),
        np.zeros(2, np.float32),
        cache=blocker / "graphs",
    )
    assert isinstance(built, bytes) and len(built) > 1000


def test_a_different_package_file_is_refused() -> None:
    altered = CLIP.recipe(64, 1).model_copy(update={"sha256": "0" * 64})
    with pytest.raises(EncoderError, match="not the file this model was trained on"):
        verified_source(altered)


def test_packaged_int8_graph_depends_on_its_batch_which_is_why_it_runs_alone(
    tmp_path: Path,
) -> None:
    """Dynamic quantisation picks one activation scale for the whole batch: run batched, an
    image's output moves with its neighbours. The engine runs such graphs image by image."""
    recipe = CLIP.recipe(64, 4)
    path = served_graph(
        recipe, np.ones((2, CLIP.width), np.float32), np.zeros(2, np.float32), cache=tmp_path
    )
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    photo = probe_input(64)
    others = rng.normal(0, 3, size=(8, 3, 64, 64)).astype(np.float32)
    alone = session.run(["embedding"], {"image": photo})[0][0]
    batched = session.run(["embedding"], {"image": np.concatenate([photo, others])})[0][0]
    assert np.abs(alone - batched).max() > 1e-3


def test_optimize_leaves_a_packaged_encoder_bundle_as_it_is(
    frozen_bundle: Path, tmp_path: Path
) -> None:
    import shutil

    from typer.testing import CliRunner

    from ai_photo_detector.cli import app

    copy = shutil.copytree(frozen_bundle, tmp_path / "bundle")
    before = (copy / "manifest.json").read_bytes()
    result = CliRunner().invoke(app, ["optimize", str(copy)])
    assert result.exit_code == 0 and "nothing to do" in result.output
    assert (copy / "manifest.json").read_bytes() == before

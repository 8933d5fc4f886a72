"""Static INT8 encoder graphs: batch-independent, close to the float graph, run on OpenVINO with
ONNX Runtime as a checked fallback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ai_photo_detector.cli.common import open_detector
from ai_photo_detector.errors import BundleInvalid
from ai_photo_detector.model import runtimes
from ai_photo_detector.model.bundle import load_bundle
from ai_photo_detector.model.encoders import (
    EncoderError,
    calibrate,
    encoder_family,
    encoder_graph,
    probe_input,
)
from ai_photo_detector.model.inference import OnnxDetector
from ai_photo_detector.model.runtimes import make_session, open_session
from ai_photo_detector.model.static_int8 import (
    activation_sites,
    float_graph,
    keep_int8_weights,
    uint8_quantisation,
)
from ai_photo_detector.settings import InferenceSettings, Settings

CLIP = encoder_family("clip_vit_b16")


def _inputs(count: int, size: int, seed: int) -> np.ndarray:
    """Image-like inputs: smooth random fields, normalised like the model's input."""
    rng = np.random.default_rng(seed)
    low = rng.normal(size=(count, 3, 4, 4)).astype(np.float32)
    return np.repeat(np.repeat(low, size // 4, axis=2), size // 4, axis=3) + 0.1 * rng.normal(
        size=(count, 3, size, size)
    ).astype(np.float32)


@pytest.fixture(scope="module")
def static_recipe():  # type: ignore[no-untyped-def]
    recipe = CLIP.recipe(64, 3, precision="static_int8", weight_bits=7)
    return calibrate(recipe, [_inputs(8, 64, 0), _inputs(8, 64, 1)])


def _turned(rows: list[list[float]]) -> list[list[float]]:
    """The rows reversed: as long as before, pointing elsewhere (what overflowing kernels give)."""
    return [row[::-1] for row in rows]


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))


def test_calibration_gives_every_quantised_activation_a_range(static_recipe) -> None:  # type: ignore[no-untyped-def]
    sites = activation_sites(encoder_graph(CLIP.recipe(64, 3)))
    assert len(sites) == 3 * 4  # per layer: attention input, its output, MLP input, fc2 input
    assert set(static_recipe.activation_ranges) == set(sites)
    assert all(low < 0 < high for low, high in static_recipe.activation_ranges.values())
    assert static_recipe.batch_independent and not CLIP.recipe(64, 3).batch_independent


def test_a_static_recipe_without_ranges_is_refused() -> None:
    with pytest.raises(EncoderError, match="calibrated activation ranges"):
        encoder_graph(CLIP.recipe(64, 3, precision="static_int8"))


def test_uint8_quantisation_holds_zero_and_the_range() -> None:
    scale, zero = uint8_quantisation(-1.0, 3.0)
    assert scale == pytest.approx(4 / 255) and zero == round(255 / 4)
    assert uint8_quantisation(0.5, 2.0)[1] == 0  # the range is widened to hold 0


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_static_graph_is_batch_independent_and_close_to_the_float_graph(
    static_recipe,  # type: ignore[no-untyped-def]
    runtime: runtimes.Runtime,
) -> None:
    graph = encoder_graph(static_recipe).SerializeToString()
    session, used = open_session(graph, runtime)
    assert used == runtime
    images = _inputs(9, 64, 7)
    (batched,) = session.run(["embedding"], {"image": images})
    for i in (0, 4, 8):
        (alone,) = session.run(["embedding"], {"image": images[i : i + 1]})
        assert np.abs(alone[0] - batched[i]).max() <= 1e-4
    reference = make_session(float_graph(encoder_graph(CLIP.recipe(64, 3))).SerializeToString())
    (exact,) = reference.run(["embedding"], {"image": images})
    assert _cosine(batched, exact).min() > 0.98


def test_seven_bit_weights_cannot_overflow_sixteen_bit_pair_sums(static_recipe) -> None:  # type: ignore[no-untyped-def]
    """Without VNNI, an x86 kernel adds two uint8 x int8 products in 16 bits: with every weight
    in -64..63 no pair passes 32,767; the 8-bit graph's weights reach -128..127."""
    from onnx import TensorProto, numpy_helper

    def weights(recipe) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
        graph = encoder_graph(recipe).graph
        return [
            numpy_helper.to_array(init).astype(np.int32)
            for init in graph.initializer
            if init.data_type == TensorProto.INT8
        ]

    narrow = weights(static_recipe)
    assert narrow and all(w.min() >= -64 and w.max() <= 63 for w in narrow)
    assert max(2 * 255 * int(np.abs(w).max()) for w in narrow) <= 32_767
    wide = weights(static_recipe.model_copy(update={"weight_bits": 8}))
    assert max(int(np.abs(w).max()) for w in wide) > 64


def test_the_packaged_dynamic_graph_is_not_batch_independent() -> None:
    """Why static ranges are needed at all: the packaged graph's features move with the batch."""
    session = make_session(encoder_graph(CLIP.recipe(64, 3)).SerializeToString())
    images = _inputs(9, 64, 7)
    images[8] *= 20  # one image with a wide range widens the batch's quantisation step
    (batched,) = session.run(["embedding"], {"image": images})
    (alone,) = session.run(["embedding"], {"image": images[:1]})
    assert np.abs(alone[0] - batched[0]).max() > 1e-3


def test_frozen_bundle_runs_on_openvino_and_falls_back_to_a_checked_onnx_runtime(
    frozen_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = load_bundle(frozen_bundle).manifest
    assert manifest.encoder is not None and manifest.encoder.recipe.runtime == "openvino"
    assert manifest.onnx.batch_independent and manifest.probe is not None
    assert manifest.probe.fallback_logits is not None
    # Its graph rounds activations: checked by the embedding's direction, on either runtime.
    assert manifest.probe.min_cosine == pytest.approx(0.99)
    assert manifest.probe.embedding is not None and manifest.probe.fallback_embedding is not None
    assert OnnxDetector(load_bundle(frozen_bundle)).runtime == "openvino"

    monkeypatch.setattr(runtimes, "openvino_available", lambda: False)
    fallback = OnnxDetector(load_bundle(frozen_bundle))
    assert fallback.runtime == "onnxruntime" and fallback.lanes is None
    embedding = fallback.run(probe_input(manifest.preprocessing.input_size)).embedding
    assert _cosine(embedding, np.asarray(manifest.probe.fallback_embedding)).min() >= 0.99

    # A fallback that does not reproduce its own probe is refused, like any other graph.
    copy = tmp_path / "bundle"
    shutil.copytree(frozen_bundle, copy)
    fields = json.loads((copy / "manifest.json").read_text())
    fields["probe"]["fallback_embedding"] = _turned(embedding.tolist())
    (copy / "manifest.json").write_text(json.dumps(fields))
    with pytest.raises(BundleInvalid, match="does not compute what training measured"):
        OnnxDetector(load_bundle(copy))


def test_kept_int8_weights_stay_close_to_the_float_graph() -> None:
    """The compressed-weight form the benchmarks compare: the packaged weights, activations
    never quantised by the graph itself (a runtime may still quantise them on the fly)."""
    images = _inputs(3, 64, 5)
    kept = make_session(keep_int8_weights(encoder_graph(CLIP.recipe(64, 3))).SerializeToString())
    exact = make_session(float_graph(encoder_graph(CLIP.recipe(64, 3))).SerializeToString())
    (a,) = kept.run(["embedding"], {"image": images})
    (b,) = exact.run(["embedding"], {"image": images})
    assert _cosine(a, b).min() > 0.999


def test_a_runtime_that_does_not_reproduce_its_probe_gives_way_to_onnx_runtime(
    frozen_bundle: Path, tmp_path: Path
) -> None:
    """Where OpenVINO's kernels compute otherwise on some CPU, the bundle still serves: on ONNX
    Runtime, checked against the probe recorded for it."""
    copy = tmp_path / "bundle"
    shutil.copytree(frozen_bundle, copy)
    fields = json.loads((copy / "manifest.json").read_text())
    fields["probe"]["embedding"] = _turned(fields["probe"]["embedding"])
    (copy / "manifest.json").write_text(json.dumps(fields))
    detector = OnnxDetector(load_bundle(copy))
    assert detector.runtime == "onnxruntime"
    # Both runtimes wrong: refused.
    fields["probe"]["fallback_embedding"] = fields["probe"]["embedding"]
    (copy / "manifest.json").write_text(json.dumps(fields))
    with pytest.raises(BundleInvalid, match="does not compute what training measured"):
        OnnxDetector(load_bundle(copy))


def test_the_runtime_can_be_chosen_where_the_bundle_recorded_its_probe(frozen_bundle: Path) -> None:
    """``inference.runtime``: ONNX Runtime in place of the recipe's OpenVINO (twice as fast on
    CPUs without VNNI), checked against the probe recorded for it; the CLI follows it."""
    chosen = OnnxDetector(load_bundle(frozen_bundle), runtime="onnxruntime")
    assert chosen.runtime == "onnxruntime" and not chosen.lanes
    assert OnnxDetector(load_bundle(frozen_bundle)).runtime == "openvino"
    settings = Settings(inference={"runtime": "onnxruntime"})
    assert open_detector(str(frozen_bundle), settings).runtime == "onnxruntime"
    recipe = Settings(inference={"runtime": "recipe"})
    assert open_detector(str(frozen_bundle), recipe).runtime == "openvino"


@pytest.mark.parametrize(("vnni", "expected"), [(True, "openvino"), (False, "onnxruntime")])
def test_auto_runtime_takes_onnx_runtime_on_cpus_without_vnni(
    frozen_bundle: Path, monkeypatch: pytest.MonkeyPatch, vnni: bool, expected: str
) -> None:
    """The default, ``auto``: the recipe's OpenVINO where the CPU has VNNI, else ONNX Runtime."""
    monkeypatch.setattr(runtimes, "cpu_has_vnni", lambda: vnni)
    assert InferenceSettings.model_fields["runtime"].default == "auto"
    settings = Settings(inference={"runtime": "auto"})
    assert open_detector(str(frozen_bundle), settings).runtime == expected


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu sse2 avx2 fma", False),  # an AVX2-only EPYC
        ("fpu avx2 avx512f avx512_vnni", True),
        ("fpu avx2 avx_vnni", True),  # AVX-VNNI without AVX-512
        ("fpu avx512f amx_int8 amx_tile", True),
    ],
)
def test_vnni_is_read_from_the_cpu_flags(tmp_path: Path, flags: str, expected: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert runtimes.cpu_has_vnni.__wrapped__(str(cpuinfo)) is expected
    assert runtimes.cpu_has_vnni.__wrapped__(str(tmp_path / "missing")) is True  # unknown: recipe

"""The exact graph rewrite: same-padding folded into convolutions, same outputs."""

from __future__ import annotations

import json
import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

torch = pytest.importorskip("torch")

from ai_photo_detector.cli import app  # noqa: E402
from ai_photo_detector.model.bundle import load_bundle  # noqa: E402
from ai_photo_detector.training.graph import (  # noqa: E402
    GraphRewriteError,
    fold_same_padding,
)
from ai_photo_detector.training.model import build_detector  # noqa: E402


def _ops(path: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def _run(model: onnx.ModelProto | Path, batch: np.ndarray) -> list[np.ndarray]:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return [np.asarray(out) for out in session.run(None, {"image": batch})]


def test_trained_bundle_has_no_shape_computed_padding(trained) -> None:  # type: ignore[no-untyped-def]
    manifest = load_bundle(trained.bundle_dir).manifest
    assert manifest.training["graph_rewrites"]["same_padding_folded"] == 5
    ops = _ops(trained.bundle_dir / "model.onnx")
    assert ops["Pad"] == ops["Shape"] == ops["Ceil"] == 0
    assert ops["Conv"] == 49
    # The parity check of the pipeline compared this rewritten graph with PyTorch.
    assert manifest.training["onnx_parity_max_scaled_diff"] <= 1e-4


def _export_unfolded(path: Path, size: int) -> None:
    """What export did before the rewrite existed: the raw torch.onnx graph."""
    model = build_detector("tf_efficientnet_lite0", 2, pretrained=False).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(2, 3, size, size),),
            str(path),
            input_names=["image"],
            output_names=["logits", "features", "embedding"],
            dynamic_axes={"image": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


def test_optimize_command_upgrades_an_old_bundle_in_place(bundle_dir: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(bundle_dir, old)
    size = load_bundle(old).manifest.preprocessing.input_size
    _export_unfolded(old / "model.onnx", size)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["files"] = {}
    manifest["training"].pop("graph_rewrites")
    from ai_photo_detector.model.bundle import write_manifest

    write_manifest(old, {k: v for k, v in manifest.items() if k != "files"})
    assert _ops(old / "model.onnx")["Pad"] == 5
    batch = np.random.default_rng(3).uniform(-1, 1, (3, 3, size, size)).astype(np.float32)
    before = _run(old / "model.onnx", batch)

    runner = CliRunner()
    result = runner.invoke(app, ["optimize", str(old)])
    assert result.exit_code == 0, result.output
    assert "folded 5" in result.output and "head.npz" not in result.output  # it has its head

    upgraded = load_bundle(old)  # checksums rewritten and verified
    assert upgraded.manifest.training["graph_rewrites"]["same_padding_folded"] == 5
    assert _ops(old / "model.onnx")["Pad"] == 0
    for expected, actual in zip(before, _run(old / "model.onnx", batch), strict=True):
        np.testing.assert_allclose(actual, expected, atol=1e-5)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch left

    again = runner.invoke(app, ["optimize", str(old)])
    assert again.exit_code == 0 and "already up to date" in again.output


def _pad_conv_graph(pads: list[int], fill: float = 0.0) -> onnx.ModelProto:
    """image -> Pad(amounts from a Constant node, as an exporter writes them) -> Conv."""
    weight = numpy_helper.from_array(
        np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), "weight"
    )
    nodes = [
        helper.make_node(
            "Constant",
            [],
            ["amounts"],
            value=numpy_helper.from_array(np.array(pads, np.int64)),
        ),
        helper.make_node(
            "Constant", [], ["fill"], value=numpy_helper.from_array(np.array(fill, np.float32))
        ),
        helper.make_node("Pad", ["image", "amounts", "fill"], ["padded"], mode="constant"),
        helper.make_node("Conv", ["padded", "weight"], ["out"], strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4, None, None])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_asymmetric_spatial_padding_is_folded_exactly() -> None:
    model = _pad_conv_graph([0, 0, 0, 1, 0, 0, 1, 2])
    batch = np.random.default_rng(1).normal(size=(2, 3, 16, 16)).astype(np.float32)
    before = _run(model, batch)[0]
    assert fold_same_padding(model, "image", 16) == 1
    assert [node.op_type for node in model.graph.node] == ["Conv"]
    np.testing.assert_allclose(_run(model, batch)[0], before, atol=1e-5)


def test_non_zero_fill_is_left_alone() -> None:
    model = _pad_conv_graph([0, 0, 1, 1, 0, 0, 1, 1], fill=0.5)
    assert fold_same_padding(model, "image", 16) == 0
    assert [node.op_type for node in model.graph.node].count("Pad") == 1


def test_padding_of_the_batch_axis_is_refused_without_changing_the_graph() -> None:
    model = _pad_conv_graph([1, 0, 1, 1, 0, 0, 1, 1])
    before = model.SerializeToString()
    with pytest.raises(GraphRewriteError, match="more than the two spatial axes"):
        fold_same_padding(model, "image", 16)
    assert model.SerializeToString() == before

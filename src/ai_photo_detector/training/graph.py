"""Exact rewrites of an exported ONNX graph that make ONNX Runtime faster.

timm's ``tf_*`` backbones use TensorFlow "same" padding. Exported, each strided convolution gets
a ``Pad`` whose amounts are computed at run time from the input's shape (Shape, Gather, Ceil,
...). ONNX Runtime cannot fold that, so it keeps the shape arithmetic and, worse, leaves its
blocked (NCHWc) convolution layout before and after every such ``Pad``. The bundle's input size
is fixed, so the amounts are constants: computing them once and moving them into the ``pads``
attribute of the convolution gives the same numbers from a plain convolution graph (about 1.4x
faster for single images on 2 cores, measured in ``benchmarks/engine_vs_torch``).
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from ai_photo_detector.errors import TrainingFailed
from ai_photo_detector.model.bundle import HEAD_FILE, MODEL_FILE, load_bundle, write_manifest
from ai_photo_detector.model.onnx_graph import readers


class GraphRewriteError(TrainingFailed):
    """The graph does not have the shape this rewrite expects; nothing was changed."""


def _evaluate(
    model: onnx.ModelProto, names: list[str], input_name: str, input_size: int
) -> list[np.ndarray]:
    """Values of inner tensors, run at two batch sizes to prove they do not depend on it."""
    probe = copy.deepcopy(model)
    for name in names:
        probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    runs = [
        session.run(names, {input_name: np.zeros((batch, 3, input_size, input_size), np.float32)})
        for batch in (1, 3)
    ]
    for name, first, second in zip(names, *runs, strict=True):
        if not np.array_equal(first, second):
            raise GraphRewriteError(f"{name} depends on the batch size: not a constant padding")
    return [np.asarray(value) for value in runs[0]]


def _static_value(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """The value of a tensor held by an initializer or a ``Constant`` node, else None."""
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            return None if value is None else numpy_helper.to_array(value)
    return None


def _zero_fill(graph: onnx.GraphProto, pad: onnx.NodeProto) -> bool:
    if len(pad.input) < 3 or not pad.input[2]:
        return True  # the default fill is zero
    value = _static_value(graph, pad.input[2])
    return value is not None and not np.any(value)


def _check_conv(conv: onnx.NodeProto) -> None:
    for attribute in conv.attribute:
        if attribute.name == "auto_pad" and attribute.s not in (b"", b"NOTSET"):
            raise GraphRewriteError(f"{conv.name} uses auto_pad {attribute.s!r}")
        if attribute.name == "pads" and any(attribute.ints):
            raise GraphRewriteError(f"{conv.name} already pads its input")


def _set_pads(conv: onnx.NodeProto, pads: list[int]) -> None:
    for attribute in conv.attribute:
        if attribute.name == "pads":
            conv.attribute.remove(attribute)
            break
    conv.attribute.append(helper.make_attribute("pads", pads))


def _drop_unused_nodes(graph: onnx.GraphProto) -> None:
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    used = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used)


def fold_same_padding(model: onnx.ModelProto, input_name: str, input_size: int) -> int:
    """Move shape-computed zero ``Pad`` amounts into the following ``Conv``; in place.

    Returns how many were folded. Only a constant-mode ``Pad`` filling with zeros, read by
    exactly one ``Conv``, is a candidate; a candidate that pads more than the two spatial axes
    or whose convolution pads already stops the rewrite with :class:`GraphRewriteError`.
    """
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    reading = readers(graph)

    candidates = []
    for node in graph.node:
        if node.op_type != "Pad" or node.input[1] in initializers:
            continue
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
        after = reading.get(node.output[0], [])
        single_conv = len(after) == 1 and after[0].op_type == "Conv"
        if mode == b"constant" and single_conv and _zero_fill(graph, node):
            candidates.append((node, after[0]))
    if not candidates:
        return 0

    names = [pad.input[1] for pad, _ in candidates]
    amounts = dict(zip(names, _evaluate(model, names, input_name, input_size), strict=True))

    spatial = []
    for pad, conv in candidates:
        values = amounts[pad.input[1]].tolist()
        if len(values) != 8:
            raise GraphRewriteError(f"{pad.name} does not pad a 4-D tensor")
        begin_n, begin_c, top, left, end_n, end_c, bottom, right = values
        if begin_n or begin_c or end_n or end_c or min(top, left, bottom, right) < 0:
            raise GraphRewriteError(f"{pad.name} pads more than the two spatial axes")
        _check_conv(conv)
        spatial.append([top, left, bottom, right])
    # Everything checked: only now is the graph changed.
    for (pad, conv), pads in zip(candidates, spatial, strict=True):
        _set_pads(conv, pads)
        conv.input[0] = pad.input[0]
    _drop_unused_nodes(graph)
    onnx.checker.check_model(model)
    return len(candidates)


def optimize_file(path: Path, input_name: str, input_size: int) -> int:
    """Apply :func:`fold_same_padding` to an ONNX file, replacing it atomically."""
    model = onnx.load(str(path))
    folded = fold_same_padding(model, input_name, input_size)
    if folded:
        partial = path.with_suffix(".onnx.partial")
        onnx.save(model, str(partial))
        partial.replace(path)
    return folded


def largest_output_difference(before: Path, after: Path, input_name: str, input_size: int) -> float:
    """Largest absolute difference of any output of two graphs on the same random images."""
    rng = np.random.default_rng(0)
    batch = rng.uniform(-1, 1, (4, 3, input_size, input_size)).astype(np.float32)
    outputs = [
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {input_name: batch}
        )
        for path in (before, after)
    ]
    return float(max(np.abs(a - b).max() for a, b in zip(*outputs, strict=True)))


def linear_head(model_path: Path, output: str = "logits") -> tuple[np.ndarray, np.ndarray]:
    """Weight (classes x channels) and bias of the ``Gemm`` that computes ``output``."""
    graph = onnx.load(str(model_path)).graph
    node = next((n for n in graph.node if output in n.output), None)
    if node is None or node.op_type != "Gemm":
        raise GraphRewriteError(f"{output} is not computed by a Gemm: no linear head to read")
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    weight = _static_value(graph, node.input[1])
    bias = _static_value(graph, node.input[2]) if len(node.input) > 2 else None
    if weight is None or weight.ndim != 2:
        raise GraphRewriteError("the head's weight is not a constant matrix")
    if attributes.get("transA", 0):
        raise GraphRewriteError("the head transposes its input: not a detector head")
    if not attributes.get("transB", 0):
        weight = weight.T
    weight = weight * attributes.get("alpha", 1.0)
    bias = np.zeros(weight.shape[0]) if bias is None else np.broadcast_to(bias, weight.shape[:1])
    bias = bias * attributes.get("beta", 1.0)
    return weight.astype(np.float32), bias.astype(np.float32)


def save_head(model_path: Path, folder: Path) -> Path:
    """Write the graph's linear head next to it, for exact class activation maps."""
    weight, bias = linear_head(model_path)
    path = folder / HEAD_FILE
    np.savez(path, weight=weight, bias=bias)
    return path


@dataclass
class Upgrade:
    folded: int = 0  # padding computations folded
    difference: float = 0.0  # largest output difference the rewrite made
    head_added: bool = False


def optimize_bundle(folder: Path, tolerance: float = 1e-4) -> Upgrade:
    """Bring a bundle exported by an older version up to what export writes now: fold the
    graph's shape-computed padding (:func:`fold_same_padding`) and ship its head's weights.

    Its calibration and evaluation stay valid because its outputs do not change: the new graph
    must agree with the old one within ``tolerance`` or the bundle is left untouched. The work
    happens on a copy that is verified like any bundle before it takes the folder's place.
    """
    manifest = load_bundle(folder).manifest
    if manifest.encoder is not None:  # built from its package at load: nothing stored to rewrite
        return Upgrade()
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-") as scratch:
        work = Path(scratch) / folder.name
        shutil.copytree(folder, work)
        model_path = work / MODEL_FILE
        size = manifest.preprocessing.input_size
        upgrade = Upgrade(folded=optimize_file(model_path, manifest.onnx.input, size))
        fields = manifest.model_dump(mode="json", exclude={"files"})
        if upgrade.folded:
            upgrade.difference = largest_output_difference(
                folder / MODEL_FILE, model_path, manifest.onnx.input, size
            )
            if not upgrade.difference <= tolerance:
                raise GraphRewriteError(
                    f"the rewritten graph differs by {upgrade.difference:.2e}, over the "
                    f"{tolerance:.0e} limit"
                )
            fields["training"]["graph_rewrites"] = {
                "same_padding_folded": upgrade.folded,
                "max_abs_output_difference": upgrade.difference,
            }
        if manifest.explain.head_file is None:
            save_head(model_path, work)
            fields["explain"]["head_file"] = HEAD_FILE
            upgrade.head_added = True
        if not upgrade.folded and not upgrade.head_added:
            return upgrade
        write_manifest(work, fields)
        load_bundle(work)
        retired = Path(scratch) / "retired"
        folder.rename(retired)
        try:
            work.rename(folder)
        except OSError:
            retired.rename(folder)  # never leave the bundle's place empty
            raise
    return upgrade

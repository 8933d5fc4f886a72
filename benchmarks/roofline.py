"""How close the default's encoder graph runs to this machine's INT8 peak.

Operations per image are counted from the recipe (every matrix product of the cut encoder: the
patch embedding, the attention projections, the attention itself and the MLP; two operations per
multiply-add). The peak is measured, not taken from a data sheet: a plain INT8 matrix product
(QuantizeLinear/DequantizeLinear around a MatMul, as in the graph) on the same runtime and
threads, at the shapes of the graph's largest products and at a large square one; the best
counts. The graph is then timed at batch 1 and batched, and its rate set against that peak.
Run: .venv/bin/python -m benchmarks.roofline
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ai_photo_detector.model.bundle import load_bundle
from ai_photo_detector.model.encoders import encoder_family, probe_input
from ai_photo_detector.model.runtimes import GraphSession, open_session
from benchmarks.common import print_table, write_csv

DEFAULT = Path(__file__).resolve().parents[1] / "models" / "default"


def operations_per_image(input_size: int, layers: int, width: int, patch: int) -> int:
    """Multiply-adds x 2 of the encoder's matrix products up to ``layers``."""
    patches = (input_size // patch) ** 2
    tokens = patches + 1
    heads, mlp = width // 64, 4 * width
    embed = patches * (3 * patch * patch) * width
    per_layer = (
        4 * tokens * width * width  # q, k, v and output projections
        + 2 * tokens * width * mlp  # fc1 and fc2
        + 2 * heads * tokens * tokens * 64  # scores and weighted values
    )
    return 2 * (embed + layers * per_layer)


def int8_matmul_graph(m: int, k: int, n: int) -> bytes:
    """One QDQ INT8 matrix product: uint8 activations, int8 weights per output column."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.integers(-127, 128, size=(k, n), dtype=np.int8)
    inits = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.full(n, 0.01, np.float32), "w.scale"),
        numpy_helper.from_array(np.zeros(n, np.int8), "w.zero"),
        numpy_helper.from_array(np.asarray(0.02, np.float32), "x.scale"),
        numpy_helper.from_array(np.asarray(128, np.uint8), "x.zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x.scale", "x.zero"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x.scale", "x.zero"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "w.scale", "w.zero"], ["wd"], axis=1),
        helper.make_node("MatMul", ["xd", "wd"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def rate(
    session: GraphSession, output: str, inputs: dict[str, np.ndarray], seconds: float
) -> float:
    """Runs per second."""
    session.run([output], inputs)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run([output], inputs)
        done += 1
    return done / (time.perf_counter() - started)


def main() -> None:
    bundle = load_bundle(DEFAULT)
    encoder = bundle.manifest.encoder
    if encoder is None:
        raise SystemExit("models/default is not a packaged-encoder bundle")
    recipe = encoder.recipe
    family = encoder_family(recipe.family)
    ops = operations_per_image(recipe.input_size, recipe.layer, family.width, family.patch)
    tokens = (recipe.input_size // family.patch) ** 2 + 1
    peaks = {}
    for m, k, n in [(16 * tokens, 768, 3072), (16 * tokens, 3072, 768), (4096, 4096, 4096)]:
        session, _ = open_session(int8_matmul_graph(m, k, n), recipe.runtime)
        x = np.random.default_rng(1).normal(size=(m, k)).astype(np.float32)
        peaks[f"{m}x{k}x{n}"] = 2 * m * k * n * rate(session, "y", {"x": x}, 2.0) / 1e12
    peak = max(peaks.values())
    graph, runtime = open_session(bundle.graph(), recipe.runtime)
    image = probe_input(recipe.input_size)
    rows: list[dict[str, Any]] = []
    for batch in (1, 8, 16):
        inputs = {"image": np.repeat(image, batch, axis=0)}
        per_s = batch * rate(graph, "logits", inputs, 3.0)
        rows.append(
            {
                "runtime": runtime,
                "input_size": recipe.input_size,
                "layer": recipe.layer,
                "gop_per_image": ops / 1e9,
                "batch": batch,
                "images_per_s": per_s,
                "achieved_tops": per_s * ops / 1e12,
                "peak_tops": peak,
                "fraction_of_peak": per_s * ops / 1e12 / peak,
                **{f"peak_{shape}": value for shape, value in peaks.items()},
            }
        )
    print_table(rows)
    write_csv("roofline", rows)


if __name__ == "__main__":
    main()

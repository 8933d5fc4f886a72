"""Static INT8: the packaged encoder's own INT8 weights, with activation ranges fixed in advance.

The packaged graph quantises each matrix product's input on the fly (``DynamicQuantizeLinear``):
one scale per run, taken from the whole batch, so an image's features depend on the images
beside it and the graph must run one image at a time. Here every such site becomes
``QuantizeLinear -> DequantizeLinear`` with a range calibrated once on training images, and the
packaged INT8 weights are read as they are (``DequantizeLinear`` per output column, their own
scales). The result is batch-independent, and runtimes with INT8 kernels (OpenVINO, ONNX Runtime)
fuse each QDQ pair and its product into one integer matrix multiplication.

Ranges run between quantiles of each site's values (``training.calibration_quantile``), taken
over a seeded sample of at most 400,000 of its values per calibration batch (for the widest
sites a batch holds millions, so "minimum and maximum" are those of the sample). By
fidelity to the float features a tighter range looks better (mean cosine 0.9954 at the
99.999th quantile, 0.9935 at the plain minimum and maximum, 0.756 at the 99.99th, which clips
the few channels a ViT's residual stream relies on); by what the detector does on sources it
never saw, the minimum and maximum measured better (leave-one-source-out mean ROC-AUC 0.792
against 0.788: the rare, very large activations, 4.5 times the 99.999th quantile on every
source, carry signal), so they are the default.

The weights can be narrowed to 7 bits (``weight_bits``; each column's INT8 value halved and its
scale doubled). Without VNNI, x86 integer kernels (AVX2's ``vpmaddubsw``, which ONNX Runtime and
OpenVINO both use there) add two unsigned-8 x signed-8 products in 16 bits, and 255 x 127 x 2
overflows it: on such a CPU the 8-bit graph's features come out wrong (cosine 0.18 with the
exact computation on an AVX2 EPYC), while 255 x 64 x 2 fits, so the 7-bit graph computes the same
integers on every x86 CPU, at 0.994 cosine to the 8-bit one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from ai_photo_detector.model.onnx_graph import prune_graph, readers

if TYPE_CHECKING:
    import onnx

DEFAULT_QUANTILE = 1.0
# Values kept per site and batch for the quantiles: the fc2 input of 64 images is 20 M values.
_SAMPLE_PER_BATCH = 400_000


@dataclass(frozen=True)
class QuantisedProduct:
    """One ``MatMulInteger`` chain of the packaged graph, with what replaces it needs."""

    activation: str  # the float tensor the packaged graph quantises on the fly
    weight: str  # INT8 initialiser (packaged)
    weight_scale: str
    weight_zero_point: str
    output: str  # the float result the chain ends in (its last Mul): what is replaced


def quantised_products(model: onnx.ModelProto) -> list[QuantisedProduct]:
    """Every dynamic INT8 matrix product: DynamicQuantizeLinear -> MatMulInteger -> Cast ->
    Mul(scales), in graph order."""
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    consumers = readers(graph)
    found = []
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        quantised, weight, _, weight_zero_point = node.input
        quantise = producers[quantised]
        (cast,) = consumers[node.output[0]]
        (rescale,) = [n for n in consumers[cast.output[0]] if n.op_type == "Mul"]
        found.append(
            QuantisedProduct(
                activation=quantise.input[0],
                weight=weight,
                weight_scale=_scale_of(rescale, producers, weight),
                weight_zero_point=weight_zero_point,
                output=rescale.output[0],
            )
        )
    return found


def _scale_of(rescale: onnx.NodeProto, producers: dict[str, onnx.NodeProto], weight: str) -> str:
    """The weight's per-column scale: the initialiser the combined-scales Mul reads."""
    for name in rescale.input:
        node = producers.get(name)
        if node is not None and node.op_type == "Mul":
            for scale in node.input:
                if scale not in producers:  # an initialiser, not the activation's scale
                    return str(scale)
    raise ValueError(f"no weight scale found for {weight}")


def activation_sites(model: onnx.ModelProto) -> list[str]:
    """The distinct activations the packaged graph quantises on the fly, in graph order."""
    return list(dict.fromkeys(p.activation for p in quantised_products(model)))


def float_graph(model: onnx.ModelProto, outputs: Iterable[str] = ()) -> onnx.ModelProto:
    """The graph with its INT8 weights dequantised (float matrix products), plus ``outputs``
    as extra graph outputs: what ranges are calibrated on."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    initialisers = {init.name: init for init in graph.initializer}
    replacements: dict[str, onnx.NodeProto] = {}
    for product in quantised_products(model):
        weight = numpy_helper.to_array(initialisers[product.weight]).astype(np.float32)
        zero = numpy_helper.to_array(initialisers[product.weight_zero_point]).astype(np.float32)
        scale = numpy_helper.to_array(initialisers[product.weight_scale]).astype(np.float32)
        name = f"{product.weight}.float"
        graph.initializer.append(numpy_helper.from_array((weight - zero) * scale, name))
        replacements[product.output] = helper.make_node(
            "MatMul", [product.activation, name], [product.output]
        )
    replace_products(model, replacements)
    for name in outputs:
        graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    _drop_unused(model)
    return model


def quantise_statically(
    model: onnx.ModelProto, ranges: dict[str, tuple[float, float]], weight_bits: int = 8
) -> onnx.ModelProto:
    """Replace every dynamic INT8 product by QDQ(activation, its fixed range) @ DQ(weight),
    the weight narrowed to ``weight_bits`` (7 or 8)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    products = quantised_products(model)
    sites = list(dict.fromkeys(p.activation for p in products))
    missing = set(sites) - set(ranges)
    if missing:
        raise ValueError(f"no calibrated range for {len(missing)} activation(s)")
    after: dict[str, list[onnx.NodeProto]] = {}
    for index, site in enumerate(sites):
        scale, zero_point = uint8_quantisation(*ranges[site])
        prefix = f"static_int8.{index}"
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.asarray(scale, np.float32), f"{prefix}.scale"),
                numpy_helper.from_array(np.asarray(zero_point, np.uint8), f"{prefix}.zero"),
            ]
        )
        after[site] = [
            helper.make_node(
                "QuantizeLinear", [site, f"{prefix}.scale", f"{prefix}.zero"], [f"{prefix}.q"]
            ),
            helper.make_node(
                "DequantizeLinear",
                [f"{prefix}.q", f"{prefix}.scale", f"{prefix}.zero"],
                [f"{prefix}.dq"],
            ),
        ]
    dequantised = {site: f"static_int8.{index}.dq" for index, site in enumerate(sites)}
    if weight_bits == 7:
        initialisers = {init.name: init for init in graph.initializer}
        products = [_narrowed(graph, product, initialisers) for product in products]
    elif weight_bits != 8:
        raise ValueError(f"weights are kept in 7 or 8 bits, not {weight_bits}")
    replacements: dict[str, onnx.NodeProto | list[onnx.NodeProto]] = {
        product.output: _int8_weight_product(product, dequantised[product.activation])
        for product in products
    }
    replace_products(model, replacements, after)
    _drop_unused(model)
    return model


def _narrowed(
    graph: onnx.GraphProto, product: QuantisedProduct, initialisers: dict[str, onnx.TensorProto]
) -> QuantisedProduct:
    """The product with its weight in 7 bits (-64..63, rounded half to even) and twice the
    scale, as new initialisers (added to ``initialisers`` too: a shared weight is narrowed
    once)."""
    from onnx import numpy_helper

    weight, scale = f"{product.weight}.7bit", f"{product.weight_scale}.7bit"
    if weight not in initialisers:
        packed = numpy_helper.to_array(initialisers[product.weight]).astype(np.int32)
        zero = numpy_helper.to_array(initialisers[product.weight_zero_point])
        if np.any(zero != 0):
            raise ValueError(f"{product.weight}: a non-zero weight zero point cannot be narrowed")
        narrow = np.clip(np.round(packed / 2), -64, 63).astype(np.int8)
        graph.initializer.append(numpy_helper.from_array(narrow, weight))
        initialisers[weight] = graph.initializer[-1]
    if scale not in initialisers:
        wide = numpy_helper.to_array(initialisers[product.weight_scale]).astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(wide * 2, scale))
        initialisers[scale] = graph.initializer[-1]
    return QuantisedProduct(
        product.activation, weight, scale, product.weight_zero_point, product.output
    )


def keep_int8_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every dynamic INT8 product as float activations @ DQ(packaged INT8 weight): the form
    runtimes read as compressed weights (OpenVINO may then quantise activations per token)."""
    replacements: dict[str, onnx.NodeProto | list[onnx.NodeProto]] = {
        product.output: _int8_weight_product(product, product.activation)
        for product in quantised_products(model)
    }
    replace_products(model, replacements)
    _drop_unused(model)
    return model


def _int8_weight_product(product: QuantisedProduct, activation: str) -> list[onnx.NodeProto]:
    """``activation`` @ the packaged INT8 weight, dequantised per output column."""
    from onnx import helper

    weight = f"{product.weight}.dq"
    return [
        helper.make_node(
            "DequantizeLinear",
            [product.weight, product.weight_scale, product.weight_zero_point],
            [weight],
            axis=1,
        ),
        helper.make_node("MatMul", [activation, weight], [product.output]),
    ]


def uint8_quantisation(low: float, high: float) -> tuple[float, int]:
    """Scale and zero point mapping ``[low, high]`` (widened to hold 0) onto 0..255."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-8) / 255.0
    return scale, int(np.clip(round(-low / scale), 0, 255))


class RangeCollector:
    """Accumulates the value quantiles of each site over calibration batches."""

    def __init__(self, sites: list[str], seed: int = 0, quantile: float = DEFAULT_QUANTILE) -> None:
        self.sites = sites
        self.quantile = quantile
        self.samples: dict[str, list[NDArray[np.float32]]] = {site: [] for site in sites}
        self.rng = np.random.default_rng(seed)

    def add(self, values: list[NDArray[np.float32]]) -> None:
        for site, array in zip(self.sites, values, strict=True):
            flat = np.asarray(array, np.float32).ravel()
            if flat.size > _SAMPLE_PER_BATCH:
                flat = self.rng.choice(flat, _SAMPLE_PER_BATCH, replace=False)
            self.samples[site].append(flat)

    def ranges(self) -> dict[str, tuple[float, float]]:
        result = {}
        for site, parts in self.samples.items():
            values = np.concatenate(parts)
            low, high = np.quantile(values, [1 - self.quantile, self.quantile])
            result[site] = (float(low), float(high))
        return result


def replace_products(
    model: onnx.ModelProto,
    replacements: dict[str, onnx.NodeProto] | dict[str, onnx.NodeProto | list[onnx.NodeProto]],
    after: dict[str, list[onnx.NodeProto]] | None = None,
) -> None:
    """Put each replacement where the node making its output was (its inputs are defined by
    then) and ``after[name]`` right after the node that makes ``name``; dead nodes go later."""
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        replacement = replacements.get(node.output[0]) if node.output else None
        if replacement is None:
            nodes.append(node)
        else:
            nodes.extend(replacement if isinstance(replacement, list) else [replacement])
        for output in node.output:
            nodes.extend((after or {}).get(output, []))
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _drop_unused(model: onnx.ModelProto) -> None:
    prune_graph(model.graph, [output.name for output in model.graph.output])

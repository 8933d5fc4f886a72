"""Token merging inside a ViT graph: fewer tokens through the later layers, same output grid.

After each of the first ``layers - 1`` transformer layers, the ``per_layer`` patch tokens most
similar to another token are averaged into it (bipartite soft matching on the layer's attention
keys, as in Bolya et al., "Token Merging: Your ViT but Faster", ICLR 2023). Each token remembers
how many original patches it stands for; attention weighs it by that size (proportional
attention), and at the end every original patch takes the value of the token it was merged
into. So the graph still answers a full (N, patches, C) grid and its mean, and a linear head on
the mean sees the size-weighted mean of the merged tokens.

Everything is per image, so a photo's features do not depend on its batch. The merge is built
from ONNX opset-14 operators only (no scatter with reduction): each merge is a one-hot matrix
(new token x old token) that the tokens, their sizes and their patch assignment are multiplied
by. Ties between equal similarities, common on flat backgrounds, are broken by token index so
every runtime merges the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx


def token_counts(patches: int, layers: int, per_layer: int) -> list[int]:
    """Tokens (class token included) entering each of ``layers`` layers."""
    counts = [patches + 1]
    for _ in range(layers - 1):
        remaining = counts[-1] - 1
        counts.append(counts[-1] - min(per_layer, remaining // 2))
    return counts


def encoder_operations(patches: int, layers: int, per_layer: int, width: int = 768) -> int:
    """Multiply-adds of the transformer layers (projections, MLP and attention), times 2."""
    return sum(
        2 * (12 * n * width * width + 2 * n * n * width)
        for n in token_counts(patches, layers, per_layer)
    )


@dataclass
class _Stream:
    """The merged state after a layer: tokens, their sizes and the patches each stands for."""

    tokens: str  # (N, n, C)
    sizes: str | None  # (N, n, 1); None while every size is 1
    assignment: str | None  # (N, n, n0): row i marks the original tokens in token i
    count: int


class _Builder:
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = []
        self.serial = 0

    def name(self, stem: str) -> str:
        self.serial += 1
        return f"token_merge/{stem}_{self.serial}"

    def constant(self, stem: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(stem)
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], stem: str, **attributes: Any) -> str:
        from onnx import helper

        output = self.name(stem)
        node = helper.make_node(op_type, inputs, [output], name=output, **attributes)
        self.nodes.append(node)
        return output


def _new_positions(b: _Builder, keys: str, count: int, merges: int) -> tuple[str, int]:
    """For each token (old order), the index of the token it becomes after ``merges`` merges;
    and the new token count. New order: class token, unmerged even patches, odd patches."""
    patches = count - 1
    evens, odds = (patches + 1) // 2, patches // 2
    even_tokens = b.constant("even", np.arange(1, count, 2, dtype=np.int64))
    odd_tokens = b.constant("odd", np.arange(2, count, 2, dtype=np.int64))
    a = b.op("Gather", [keys, even_tokens], "a_keys", axis=1)
    c = b.op("Gather", [keys, odd_tokens], "b_keys", axis=1)
    a = b.op("Div", [a, b.op("ReduceL2", [a], "a_norm", axes=[-1], keepdims=1)], "a_unit")
    c = b.op("Div", [c, b.op("ReduceL2", [c], "b_norm", axes=[-1], keepdims=1)], "b_unit")
    scores = b.op("MatMul", [a, b.op("Transpose", [c], "b_t", perm=[0, 2, 1])], "scores")
    best = b.op("ReduceMax", [scores], "best", axes=[2], keepdims=0)  # (N, evens)
    target = b.op("ArgMax", [scores], "target", axis=2, keepdims=0)
    # Rank of each even token by its best similarity, ties to the lower index: the first
    # ``merges`` ranks merge. (No TopK: its order among ties differs between runtimes.)
    column = b.op("Unsqueeze", [best, b.constant("axis1", np.array([1], np.int64))], "best_col")
    row = b.op("Unsqueeze", [best, b.constant("axis2", np.array([2], np.int64))], "best_row")
    above = b.op("Cast", [b.op("Greater", [column, row], "gt")], "gt_f", to=1)
    tied = b.op("Cast", [b.op("Equal", [column, row], "eq")], "eq_f", to=1)
    earlier = b.constant("earlier", np.tril(np.ones((evens, evens), np.float32), -1))
    ahead = b.op("Add", [above, b.op("Mul", [tied, earlier], "tied_earlier")], "ahead")
    rank = b.op(
        "ReduceSum", [ahead, b.constant("axis2", np.array([2], np.int64))], "rank", keepdims=0
    )
    kept = evens - merges
    merged = b.op("Less", [rank, b.constant("merges", np.array(merges, np.float32))], "merged")
    into = b.op(
        "Add",
        [
            b.op("Cast", [target], "target_f", to=1),
            b.constant("odd_start", np.array(1 + kept, np.float32)),
        ],
        "into",
    )
    stays = b.op("Add", [rank, b.constant("kept_start", np.array(1 - merges, np.float32))], "stays")
    even_new = b.op("Where", [merged, into, stays], "even_new")
    # Odd patches and the class token keep their places: broadcast constants to the batch.
    zeros = b.op(
        "Mul",
        [
            b.op("Slice", [even_new, *_slice_args(b, 0, 1)], "first"),
            b.constant("zero", np.array(0, np.float32)),
        ],
        "zeros",
    )  # (N, 1)
    odd_new = b.op(
        "Add",
        [zeros, b.constant("odd_new", 1 + kept + np.arange(odds, dtype=np.float32)[None])],
        "odd_new",
    )
    grouped = b.op("Concat", [zeros, even_new, odd_new], "grouped", axis=1)
    # Back to the old token order: class, patch 0 (even), patch 1 (odd), ...
    order = np.empty(count, np.int64)
    order[0] = 0
    order[1::2] = 1 + np.arange(evens)
    order[2::2] = 1 + evens + np.arange(odds)
    positions = b.op("Gather", [grouped, b.constant("order", order)], "positions", axis=1)
    return b.op("Cast", [positions], "positions_i", to=7), count - merges


def _slice_args(b: _Builder, start: int, end: int) -> list[str]:
    return [
        b.constant("start", np.array([start], np.int64)),
        b.constant("end", np.array([end], np.int64)),
        b.constant("axis1", np.array([1], np.int64)),
    ]


def _merge(b: _Builder, stream: _Stream, keys: str, merges: int) -> _Stream:
    positions, count = _new_positions(b, keys, stream.count, merges)
    one_hot = b.op(
        "OneHot",
        [
            positions,
            b.constant("depth", np.array(count, np.int64)),
            b.constant("off_on", np.array([0, 1], np.float32)),
        ],
        "one_hot",
        axis=-1,
    )  # (N, old, new)
    matrix = b.op("Transpose", [one_hot], "merge_matrix", perm=[0, 2, 1])  # (N, new, old)
    if stream.sizes is None or stream.assignment is None:
        weighted = stream.tokens
        sizes = b.op(
            "ReduceSum", [matrix, b.constant("axis2", np.array([2], np.int64))], "sizes", keepdims=1
        )
        assignment = matrix
    else:
        weighted = b.op("Mul", [stream.tokens, stream.sizes], "weighted")
        sizes = b.op("MatMul", [matrix, stream.sizes], "sizes")
        assignment = b.op("MatMul", [matrix, stream.assignment], "assignment")
    summed = b.op("MatMul", [matrix, weighted], "summed")
    tokens = b.op("Div", [summed, sizes], "tokens")
    return _Stream(tokens, sizes, assignment, count)


def _layer_prefix(layer: int) -> str:
    return f"/vision_model/encoder/layers.{layer - 1}/"


def merge_tokens(
    graph: onnx.GraphProto, layer_outputs: list[str], per_layer: int, tokens: int
) -> str:
    """Insert merging between the layers whose outputs are ``layer_outputs`` (layer 1 first,
    ``tokens`` tokens entering layer 1); return the name of a (N, tokens, C) tensor of the last
    layer spread back over the original tokens (class token first)."""
    if per_layer <= 0:
        return layer_outputs[-1]
    b = _Builder(graph)
    nodes = list(graph.node)
    producers = {out: i for i, node in enumerate(nodes) for out in node.output}
    stream = _Stream(layer_outputs[0], None, None, tokens)
    insert_after: dict[int, list[onnx.NodeProto]] = {}
    insert_before: dict[int, list[onnx.NodeProto]] = {}
    for layer, output in enumerate(layer_outputs[:-1], start=1):
        merges = min(per_layer, (stream.count - 1) // 2)
        if merges:
            b.nodes = []
            keys = f"{_layer_prefix(layer)}self_attn/k_proj/Add_output_0"
            stream = _merge(b, replace(stream, tokens=output), keys, merges)
            insert_after[producers[output]] = b.nodes
            _feed_next_layer(b, nodes, layer + 1, output, stream, insert_before)
        # The next layer's output is the residual stream the next merge starts from.
        stream = replace(stream, tokens=layer_outputs[layer])
    if stream.assignment is None:
        return layer_outputs[-1]
    b.nodes = []
    back = b.op("Transpose", [stream.assignment], "assignment_t", perm=[0, 2, 1])
    spread = b.op("MatMul", [back, layer_outputs[-1]], "spread")
    insert_after.setdefault(producers[layer_outputs[-1]], []).extend(b.nodes)
    rebuilt: list[onnx.NodeProto] = []
    for i, node in enumerate(nodes):
        rebuilt.extend(insert_before.get(i, []))
        rebuilt.append(node)
        rebuilt.extend(insert_after.get(i, []))
    del graph.node[:]
    graph.node.extend(rebuilt)
    return spread


def _feed_next_layer(
    b: _Builder,
    nodes: list[onnx.NodeProto],
    layer: int,
    unmerged: str,
    stream: _Stream,
    insert_before: dict[int, list[onnx.NodeProto]],
) -> None:
    """Layer ``layer`` reads the merged tokens, and its attention weighs each by its size."""
    assert stream.sizes is not None
    prefix = _layer_prefix(layer)
    for i, node in enumerate(nodes):
        if not node.name.startswith(prefix):
            continue
        node.input[:] = [stream.tokens if n == unmerged else n for n in node.input]
        if node.op_type == "Softmax":
            b.nodes = []
            log_sizes = b.op("Log", [stream.sizes], "log_sizes")
            as_row = b.op("Transpose", [log_sizes], "log_sizes_row", perm=[0, 2, 1])
            axis = b.constant("axis1", np.array([1], np.int64))
            bias = b.op("Unsqueeze", [as_row, axis], "size_bias")  # (N, 1, 1, n)
            node.input[0] = b.op("Add", [node.input[0], bias], "attention_logits")
            insert_before[i] = b.nodes

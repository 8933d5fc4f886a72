"""Small edits of ONNX graphs shared by the graph builders."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx


def prune_graph(graph: onnx.GraphProto, outputs: list[str]) -> None:
    """Keep only the nodes and initialisers the named outputs need."""
    needed = set(outputs)
    kept = []
    for node in reversed(list(graph.node)):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    initialisers = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initialisers)
    del graph.value_info[:]  # shapes change with the input size: let the runtime infer them


def readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it, in graph order."""
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


QUANTISING_OPS = frozenset({"QuantizeLinear", "DynamicQuantizeLinear"})


def quantises_activations(model: str | bytes) -> bool:
    """Whether the graph (a path or its bytes) rounds activations to integers on the way."""
    import onnx

    graph = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(model)
    return any(node.op_type in QUANTISING_OPS for node in graph.graph.node)

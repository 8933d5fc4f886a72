"""Token merging inside the encoder graph: the merge does what bipartite soft matching says,
keeps every photo's features independent of its batch, and leaves the output grid whole."""

from __future__ import annotations

import numpy as np
import pytest

from ai_photo_detector.model.encoders import calibrate, encoder_family, encoder_graph
from ai_photo_detector.model.runtimes import make_session
from ai_photo_detector.model.token_merging import (
    _Builder,
    _merge,
    _Stream,
    encoder_operations,
    token_counts,
)

CLIP = encoder_family("clip_vit_b16")


def _reference_merge(tokens, keys, sizes, merges):  # type: ignore[no-untyped-def]
    """Bipartite soft matching written plainly, one image at a time: even patches are matched
    to their most similar odd patch; the ``merges`` best matched are averaged in (by size)."""
    cls, patches, patch_keys, patch_sizes = tokens[:1], tokens[1:], keys[1:], sizes[1:]
    a, b = patch_keys[0::2], patch_keys[1::2]
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    scores = a @ b.T
    best, target = scores.max(axis=1), scores.argmax(axis=1)
    order = sorted(range(len(best)), key=lambda i: (-best[i], i))
    merged, kept = order[:merges], sorted(order[merges:], key=order.index)
    odd_sum = patches[1::2] * patch_sizes[1::2]
    odd_size = patch_sizes[1::2].copy()
    for i in merged:
        odd_sum[target[i]] += patches[0::2][i] * patch_sizes[0::2][i]
        odd_size[target[i]] += patch_sizes[0::2][i]
    out = np.concatenate([cls, patches[0::2][kept], odd_sum / odd_size])
    out_sizes = np.concatenate([sizes[:1], patch_sizes[0::2][kept], odd_size])
    return out, out_sizes


def _merge_graph(count: int, width: int, merges: int) -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph([], "merge", [], [])
    for name, last in (("tokens", width), ("keys", width), ("sizes", 1)):
        graph.input.append(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, count, last])
        )
    builder = _Builder(graph)
    out = _merge(builder, _Stream("tokens", "sizes", "assignment", count), "keys", merges)
    graph.input.append(
        helper.make_tensor_value_info("assignment", TensorProto.FLOAT, [None, count, count])
    )
    graph.node.extend(builder.nodes)
    graph.output.extend(
        helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
        for name in (out.tokens, out.sizes)
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    return model.SerializeToString()


@pytest.mark.parametrize("count, merges", [(11, 3), (12, 5), (9, 1)])
def test_merge_matches_plain_bipartite_matching(count: int, merges: int) -> None:
    rng = np.random.default_rng(count)
    batch, width = 3, 8
    tokens = rng.normal(size=(batch, count, width)).astype(np.float32)
    keys = rng.normal(size=(batch, count, width)).astype(np.float32)
    keys[1, 3] = keys[1, 5] = keys[1, 1]  # equal similarities: ties go to the lower index
    sizes = rng.integers(1, 4, size=(batch, count, 1)).astype(np.float32)
    assignment = np.repeat(np.eye(count, dtype=np.float32)[None], batch, axis=0)
    session = make_session(_merge_graph(count, width, merges))
    merged, merged_sizes = session.run(
        None, {"tokens": tokens, "keys": keys, "sizes": sizes, "assignment": assignment}
    )
    assert merged.shape == (batch, count - merges, width)
    for i in range(batch):
        expected, expected_sizes = _reference_merge(tokens[i], keys[i], sizes[i], merges)
        np.testing.assert_allclose(merged[i], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(merged_sizes[i], expected_sizes)
        assert merged_sizes[i].sum() == sizes[i].sum()  # no patch lost or counted twice


def test_token_counts_and_operations() -> None:
    assert token_counts(100, 7, 0) == [101] * 7
    assert token_counts(100, 7, 12) == [101, 89, 77, 65, 53, 41, 29]
    assert token_counts(10, 4, 8) == [11, 6, 4, 3]  # never more than half the patches
    assert encoder_operations(100, 7, 12) < 0.7 * encoder_operations(100, 7, 0)


def _images(count: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    low = rng.normal(size=(count, 3, 4, 4)).astype(np.float32)
    smooth = np.repeat(np.repeat(low, size // 4, axis=2), size // 4, axis=3)
    return smooth + 0.1 * rng.normal(size=(count, 3, size, size)).astype(np.float32)


def test_merged_encoder_keeps_grid_and_batch_independence() -> None:
    images = _images(6, 64)
    recipe = CLIP.recipe(64, 3, precision="static_int8", weight_bits=7, token_merges=4)
    recipe = calibrate(recipe, [images[:3], images[3:]])
    merged = make_session(encoder_graph(recipe).SerializeToString())
    grid, embedding = merged.run(["features", "embedding"], {"image": images})
    assert grid.shape == (6, CLIP.width, 4, 4)
    # The embedding is the mean of the grid: each original patch counted once.
    np.testing.assert_allclose(embedding, grid.mean(axis=(2, 3)), rtol=1e-4, atol=1e-4)
    alone = np.concatenate([merged.run(["embedding"], {"image": im[None]})[0] for im in images])
    np.testing.assert_allclose(alone, embedding, atol=1e-4)
    plain = calibrate(recipe.model_copy(update={"token_merges": 0}), [images[:3], images[3:]])
    unmerged = make_session(encoder_graph(plain).SerializeToString()).run(
        ["embedding"], {"image": images}
    )[0]
    cosine = (embedding * unmerged).sum(1) / np.linalg.norm(embedding, axis=1)
    cosine /= np.linalg.norm(unmerged, axis=1)
    assert cosine.min() > 0.9  # fewer tokens, nearly the same features
    assert not np.allclose(embedding, unmerged, atol=1e-3)  # and yet something was merged

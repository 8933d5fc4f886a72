"""Exact and near-duplicate groups (SHA-256 and perceptual hash), as connected components."""

from __future__ import annotations

import numpy as np

from ai_photo_detector.data.scan import ScannedImage


def near_duplicate_pairs(
    images: list[ScannedImage], max_distance: int
) -> list[tuple[int, int, int]]:
    """Pairs (i, j, distance) of readable images whose pHashes differ in <= max_distance bits."""
    index = [i for i, img in enumerate(images) if img.ok]
    if len(index) < 2:
        return []
    hashes = np.asarray([images[i].phash for i in index], dtype=np.uint64)
    pairs = []
    for a in range(len(index) - 1):
        distances = np.bitwise_count(hashes[a + 1 :] ^ hashes[a])
        for offset in np.nonzero(distances <= max_distance)[0]:
            b = a + 1 + int(offset)
            pairs.append((index[a], index[b], int(distances[offset])))
    return pairs


def exact_duplicate_groups(images: list[ScannedImage]) -> list[list[int]]:
    by_digest: dict[str, list[int]] = {}
    for i, img in enumerate(images):
        if img.sha256:
            by_digest.setdefault(img.sha256, []).append(i)
    return [group for group in by_digest.values() if len(group) > 1]


def duplicate_groups(n: int, pairs: list[tuple[int, int]]) -> list[int]:
    """Group id per image: images linked by any chain of pairs share a group (union-find)."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]

"""Deterministic, duplicate-aware train/validation/test splits.

Near-duplicate groups move as one: a group is assigned to a split as a whole, so no image has
a near-copy on the other side. Within each (source, label) stratum, groups are ordered by a
seeded hash of their content and cut by the configured fractions: the same files and seed always
give the same split, whatever order the files were listed in.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

from ai_photo_detector.data.discovery import Sample
from ai_photo_detector.data.duplicates import duplicate_groups, near_duplicate_pairs
from ai_photo_detector.data.scan import ScannedImage

SPLITS = ("train", "val", "test")


def split_samples(
    images: list[ScannedImage],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    near_duplicate_distance: int,
) -> dict[str, list[Sample]]:
    usable = [img for img in images if img.ok]
    pairs = [(a, b) for a, b, _ in near_duplicate_pairs(usable, near_duplicate_distance)]
    by_digest: dict[str, int] = {}
    for i, img in enumerate(usable):  # exact copies are duplicates too
        if img.sha256 in by_digest:
            pairs.append((by_digest[img.sha256], i))
        by_digest.setdefault(img.sha256, i)
    group_of = duplicate_groups(len(usable), pairs)
    members: dict[int, list[int]] = defaultdict(list)
    for i, group in enumerate(group_of):
        members[group].append(i)

    strata: dict[tuple[str, str], list[int]] = defaultdict(list)
    for group, items in members.items():
        first = usable[items[0]].sample
        strata[(first.source, first.label)].append(group)

    def order_key(group: int) -> str:
        content = min(usable[i].sha256 for i in members[group])
        return hashlib.sha256(f"{seed}:{content}".encode()).hexdigest()

    result: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for key in sorted(strata):
        groups = sorted(strata[key], key=order_key)
        total = sum(len(members[g]) for g in groups)
        targets = {"test": test_fraction * total, "val": val_fraction * total}
        filled = {"test": 0, "val": 0}
        for group in groups:
            size = len(members[group])
            if filled["test"] + size / 2 <= targets["test"]:
                name = "test"
            elif filled["val"] + size / 2 <= targets["val"]:
                name = "val"
            else:
                name = "train"
            if name in filled:
                filled[name] += size
            result[name].extend(usable[i].sample for i in members[group])
    for name in SPLITS:
        result[name].sort(key=lambda s: str(s.path))
    return result


def split_digest(splits: dict[str, list[Sample]], digests: dict[Path, str]) -> str:
    """Which image (by content) went to which split: a split made again from the same data
    with other settings (seed, fractions) gives another digest even where its sizes match."""
    digest = hashlib.sha256()
    lines = sorted(f"{name}:{digests[s.path]}" for name, part in splits.items() for s in part)
    for line in lines:
        digest.update(line.encode())
    return digest.hexdigest()

"""Find labelled images: folders with one sub-folder per label, or CSV manifests (path,label)."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ai_photo_detector.errors import DatasetInvalid


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    source: str  # the dataset a sample came from: folder or manifest name


class DatasetError(DatasetInvalid):
    """A dataset path that cannot be read as labelled images."""


def _scan_folder(root: Path, extensions: set[str]) -> list[Sample]:
    samples = []
    label_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not label_dirs:
        raise DatasetError(f"{root} has no label sub-folders (expected e.g. real/ and ai/)")
    for label_dir in label_dirs:
        for file in sorted(label_dir.rglob("*")):
            if file.is_file() and file.suffix.lower() in extensions:
                samples.append(Sample(file, label_dir.name, root.name))
    return samples


def _read_manifest(manifest: Path) -> list[Sample]:
    samples = []
    with manifest.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
            raise DatasetError(f"{manifest} must be a CSV with 'path' and 'label' columns")
        for row in reader:
            path = Path(row["path"])
            if not path.is_absolute():
                path = manifest.parent / path
            source = (row.get("source") or "").strip() or manifest.stem
            samples.append(Sample(path, row["label"].strip(), source))
    return samples


def discover(paths: list[str | Path], extensions: list[str]) -> list[Sample]:
    """All samples of all given datasets, combined, in a stable order."""
    allowed = {ext.lower() for ext in extensions}
    samples: list[Sample] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            samples.extend(_scan_folder(path, allowed))
        elif path.is_file() and path.suffix.lower() == ".csv":
            samples.extend(_read_manifest(path))
        else:
            raise DatasetError(f"{path} is neither a dataset folder nor a CSV manifest")
    if not samples:
        raise DatasetError("no images found in " + ", ".join(str(p) for p in paths))
    return samples


def labels_of(samples: list[Sample]) -> list[str]:
    return sorted({s.label for s in samples})


def counts(samples: list[Sample]) -> dict[str, dict[str, int]]:
    """source -> label -> count."""
    table: dict[str, Counter[str]] = {}
    for sample in samples:
        table.setdefault(sample.source, Counter())[sample.label] += 1
    return {source: dict(sorted(c.items())) for source, c in sorted(table.items())}


def fingerprint(samples: list[Sample], digests: dict[Path, str]) -> str:
    """Content fingerprint of a dataset: changes when any image, label or source changes."""
    digest = hashlib.sha256()
    for line in sorted(f"{digests.get(s.path, '')}:{s.label}:{s.source}" for s in samples):
        digest.update(line.encode())
    return digest.hexdigest()

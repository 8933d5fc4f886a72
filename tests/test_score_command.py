"""``ai-photo-detector score``: folders, manifests and storage prefixes to one results file,
the same rows from the local engine and from Ray Data on a local Ray instance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ai_photo_detector.batch.engines import expand_sources
from ai_photo_detector.errors import InputError


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> tuple[Path, Path]:
    """A folder of photos (one of them broken) and a manifest naming a few of them."""
    root = tmp_path_factory.mktemp("score")
    folder = root / "photos"
    folder.mkdir()
    photos = sorted(tiny_dataset.rglob("*.jpg"))[:20]
    for i, photo in enumerate(photos):
        (folder / f"{i:02d}.jpg").write_bytes(photo.read_bytes())
    (folder / "99-broken.jpg").write_bytes(photos[0].read_bytes()[:300])
    manifest = root / "more.txt"
    manifest.write_text("\n".join(str(p) for p in photos[:3]) + "\n")
    return folder, manifest


def _score(bundle_dir: Path, out: Path, *args: str) -> list[dict[str, object]]:
    command = [sys.executable, "-m", "ai_photo_detector.cli", "score", *args, "--out", str(out)]
    env = {**os.environ, "APD_MODEL": str(bundle_dir)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return pq.read_table(out).to_pylist() if out.suffix == ".parquet" else []


def test_local_and_ray_engines_give_the_same_rows(
    bundle_dir: Path, sources: tuple[Path, Path], tmp_path: Path
) -> None:
    pytest.importorskip("ray")
    folder, manifest = sources
    local = _score(bundle_dir, tmp_path / "local.parquet", str(folder), str(manifest))
    ray = _score(
        bundle_dir,
        tmp_path / "ray.parquet",
        str(folder),
        str(manifest),
        "--engine",
        "ray",
        "--workers",
        "2",
    )
    assert len(local) == 24 and [r["item"] for r in local] == list(range(24))
    assert ray == local  # nothing lost, nothing twice, the same verdicts in the same order
    broken = [r for r in local if r["name"].endswith("99-broken.jpg")]
    assert len(broken) == 1 and broken[0]["error_code"] and broken[0]["label"] is None
    assert all(r["label"] in {"ai", "real"} for r in local if not r["error_code"])


def test_csv_and_jsonl_outputs(
    bundle_dir: Path, sources: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, _ = sources
    _score(bundle_dir, tmp_path / "rows.csv", str(folder))
    _score(bundle_dir, tmp_path / "rows.jsonl", str(folder))
    assert len((tmp_path / "rows.csv").read_text().splitlines()) == 22  # header + 21 rows
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 21


def test_sources_are_expanded_or_refused(sources: tuple[Path, Path], tmp_path: Path) -> None:
    import fsspec

    folder, manifest = sources
    fs = fsspec.filesystem("memory")
    fs.pipe("/shelf/a/1.jpg", b"x")
    fs.pipe("/shelf/b/2.png", b"y")
    fs.pipe("/shelf/notes.txt", b"z")
    items = expand_sources([str(folder), str(manifest), "memory://shelf/"], [".jpg", ".png"])
    names = [i.name for i in items]
    assert len(names) == 21 + 3 + 2
    assert names[-2].startswith("memory://") and names[-2].endswith("/shelf/a/1.jpg")
    assert names[-1].endswith("/shelf/b/2.png")
    assert [i.number for i in items] == list(range(len(items)))
    with pytest.raises(InputError) as caught:
        expand_sources([str(tmp_path / "missing")], [".jpg"])
    assert caught.value.code == "source_not_found"

"""What a job may be made of: archives checked whole before acceptance, manifests only under
the configured storage roots."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ai_photo_detector.batch.archives import (
    ArchiveLimits,
    ArchiveReader,
    ArchiveRefused,
    open_archive,
)
from ai_photo_detector.batch.manifests import StorageRoots, parse_manifest, read_path
from ai_photo_detector.errors import InputError
from helpers import encode, smooth_image

LIMITS = ArchiveLimits(
    max_images=10,
    max_member_bytes=200_000,
    max_expanded_bytes=1_000_000,
    max_ratio=50.0,
    extensions=frozenset({".jpg", ".png"}),
)


@pytest.fixture(scope="module")
def photo() -> bytes:
    return encode(smooth_image(np.random.default_rng(0)), "JPEG", quality=90)


def _zip(path: Path, members: dict[str, bytes], **kwargs: object) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _tar(path: Path, members: dict[str, bytes], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _refused(path: Path, code: str) -> None:
    with pytest.raises(ArchiveRefused) as caught:
        open_archive(path, LIMITS)
    assert caught.value.code == code


def test_zip_images_are_items_and_read_back(tmp_path: Path, photo: bytes) -> None:
    members = {
        "a/1.jpg": photo,
        "b/2.JPG": photo[::-1],
        "notes.txt": b"x",
        ".hidden.jpg": photo,
        "__MACOSX/a/._1.jpg": b"apple",
    }
    kind, path, items = open_archive(_zip(tmp_path / "x.upload", members), LIMITS)
    assert kind == "zip" and [i.name for i in items] == ["a/1.jpg", "b/2.JPG"]
    with ArchiveReader(kind, path, LIMITS.max_member_bytes) as reader:
        assert reader.read(items[0]) == photo and reader.read(items[1]) == photo[::-1]


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_tar_and_tar_gz_read_by_offset(tmp_path: Path, photo: bytes, mode: str) -> None:
    upload = _tar(tmp_path / "x.upload", {"x/1.jpg": photo, "2.png": photo[:100]}, mode)
    kind, path, items = open_archive(upload, LIMITS)
    assert kind == "tar" and [i.name for i in items] == ["x/1.jpg", "2.png"]
    if mode == "w:gz":
        assert not upload.exists() and path.suffix == ".tar"  # expanded once, upload removed
    with ArchiveReader(kind, path, LIMITS.max_member_bytes) as reader:
        assert [reader.read(i) for i in items] == [photo, photo[:100]]


@pytest.mark.parametrize("name", ["../evil.jpg", "/etc/evil.jpg", "a/../../evil.jpg", "C:\\x.jpg"])
def test_names_that_leave_the_archive_are_refused(tmp_path: Path, name: str) -> None:
    _refused(_zip(tmp_path / "z.upload", {name: b"x"}), "archive_path")
    _refused(_tar(tmp_path / "t.upload", {name: b"x"}), "archive_path")


def test_links_and_devices_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "link.upload"
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("photo.jpg")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        archive.addfile(info)
    _refused(path, "archive_link")

    path = tmp_path / "fifo.upload"
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("pipe.jpg")
        info.type = tarfile.FIFOTYPE
        archive.addfile(info)
    _refused(path, "archive_special_file")

    path = tmp_path / "ziplink.upload"
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("photo.jpg")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    _refused(path, "archive_link")


def test_limits_and_bombs_are_refused(tmp_path: Path, photo: bytes) -> None:
    many = {f"{i}.jpg": photo for i in range(LIMITS.max_images + 1)}
    _refused(_zip(tmp_path / "many.upload", many), "archive_too_many")
    big = os.urandom(LIMITS.max_member_bytes + 1)
    _refused(_zip(tmp_path / "big.upload", {"big.jpg": big}), "archive_member_too_large")
    # Zeros compress about 1000-fold: no image does that.
    _refused(_zip(tmp_path / "bomb.upload", {"bomb.jpg": bytes(150_000)}), "archive_bomb")
    spread = {f"{i}.jpg": os.urandom(150_000) for i in range(8)}  # 1.2 MB expanded in all
    _refused(_zip(tmp_path / "sum.upload", spread), "archive_too_large")
    gz = tmp_path / "gzbomb.upload"
    with gzip.open(gz, "wb") as stream:  # a gzip stream far past every limit
        for _ in range(3):
            stream.write(bytes(1_000_000))
    _refused(gz, "archive_bomb")


def test_other_bodies_are_refused(tmp_path: Path, photo: bytes) -> None:
    (tmp_path / "photo.upload").write_bytes(photo)
    _refused(tmp_path / "photo.upload", "archive_unsupported")
    _refused(_zip(tmp_path / "empty.upload", {"notes.txt": b"x"}), "archive_empty")
    damaged = tmp_path / "damaged.upload"
    damaged.write_bytes(b"PK\x03\x04" + os.urandom(300))
    _refused(damaged, "archive_unreadable")


def test_manifest_paths_stay_under_the_roots(tmp_path: Path, photo: bytes) -> None:
    root = tmp_path / "catalogue"
    (root / "shoes").mkdir(parents=True)
    inside = root / "shoes" / "1.jpg"
    inside.write_bytes(photo)
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"secret")
    (root / "escape.jpg").symlink_to(secret)
    roots = StorageRoots([str(root), "memory://bucket/photos/"])

    assert roots.check(str(inside)) == str(inside)
    assert read_path(f"file://{inside}", roots, 1_000_000) == photo
    for outside in (
        str(secret),
        str(root / "shoes" / ".." / ".." / "secret.jpg"),
        str(root / "escape.jpg"),  # a link out of the root
        str(tmp_path / "catalogue-other" / "x.jpg"),  # a sibling sharing the prefix
        "https://example.com/photo.jpg",
        "memory://bucket/other/x.jpg",
        "memory://bucket/photos/../other/x.jpg",
        "memory://bucket/photos/x.jpg?version=2",
    ):
        with pytest.raises(InputError) as caught:
            roots.check(outside)
        assert caught.value.code in {"path_outside_roots", "invalid_manifest"}, outside
    with pytest.raises(InputError) as caught:
        roots.check("relative/1.jpg")
    assert caught.value.code == "invalid_manifest"


def test_manifest_reads_through_fsspec(photo: bytes) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/photos/a.jpg", photo)
    roots = StorageRoots(["memory://bucket/photos/"])
    assert read_path("memory://bucket/photos/a.jpg", roots, 1_000_000) == photo
    with pytest.raises(InputError) as caught:
        read_path("memory://bucket/photos/missing.jpg", roots, 1_000_000)
    assert caught.value.code == "not_found"
    with pytest.raises(InputError) as caught:
        read_path("memory://bucket/photos/a.jpg", roots, 10)
    assert caught.value.code == "image_too_large"


def test_manifest_formats_and_limits() -> None:
    assert parse_manifest(b'{"paths": ["/a.jpg", "/b.jpg"]}', 10) == ["/a.jpg", "/b.jpg"]
    assert parse_manifest(b"/a.jpg\n\n/b.jpg\n", 10) == ["/a.jpg", "/b.jpg"]
    for body, code in (
        (b'{"paths": "/a.jpg"}', "invalid_manifest"),
        (b"{not json", "invalid_manifest"),
        (b"\xff\xfe", "invalid_manifest"),
        (b"\n\n", "manifest_empty"),
        (b"/a\n/b\n/c\n", "manifest_too_many"),
    ):
        with pytest.raises(InputError) as caught:
            parse_manifest(body, 2)
        assert caught.value.code == code, body

"""Uploaded archives (zip, tar, tar.gz): checked whole before a job is accepted, read member
by member afterwards.

Everything a hostile archive can try is refused with a stable code: names that climb out of
the archive or are absolute, links, device files, encrypted members, more members or more
expanded bytes than allowed, and members (or a gzip stream) that expand far more than images
ever do (bombs). Only image members become items; folders, dotfiles and ``__MACOSX`` are
skipped.
"""

from __future__ import annotations

import gzip
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ai_photo_detector.errors import InputError
from ai_photo_detector.persistence.jobs import Item

ZIP, TAR = "zip", "tar"
_GZIP_MAGIC = b"\x1f\x8b"
_RATIO_FLOOR = 64 * 1024 * 1024  # a gzip stream's ratio is judged only past this size


class ArchiveRefused(InputError):
    """An archive that will not be read; ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code)


@dataclass(frozen=True)
class ArchiveLimits:
    max_images: int
    max_member_bytes: int
    max_expanded_bytes: int
    max_ratio: float
    extensions: frozenset[str]


def kind_of(path: Path) -> str:
    """zip, tar or gzip, from the file's first bytes (never from a name or a header)."""
    with path.open("rb") as file:
        head = file.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return ZIP
    if head[:2] == _GZIP_MAGIC:
        return "gzip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return TAR
    raise ArchiveRefused("archive_unsupported", "the body is not a zip, tar or tar.gz archive")


def safe_name(name: str) -> str:
    """The member's name if it stays inside the archive, else a refusal."""
    posix = name.replace("\\", "/")
    parts = PurePosixPath(posix).parts
    if (
        not posix
        or "\x00" in posix
        or posix.startswith("/")
        or (parts and ":" in parts[0])  # C:\..., a drive
        or ".." in parts
    ):
        raise ArchiveRefused("archive_path", f"member {name!r} points outside the archive")
    return posix


def _is_image(name: str, extensions: frozenset[str]) -> bool:
    path = PurePosixPath(name)
    if path.parts and path.parts[0] == "__MACOSX":
        return False
    return not path.name.startswith(".") and path.suffix.lower() in extensions


class _Tally:
    """Counts what an archive holds against the limits as it is listed."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits = limits
        self.items: list[Item] = []
        self.expanded = 0

    def add(self, name: str, size: int, offset: int = -1, packed: int | None = None) -> None:
        limits = self.limits
        if size > limits.max_member_bytes:
            raise ArchiveRefused(
                "archive_member_too_large",
                f"member {name!r} holds {size} bytes; at most {limits.max_member_bytes} allowed",
            )
        if packed is not None and size > 1024 and size > packed * limits.max_ratio:
            raise ArchiveRefused(
                "archive_bomb", f"member {name!r} expands {size / max(packed, 1):.0f}-fold"
            )
        self.expanded += size
        if self.expanded > limits.max_expanded_bytes:
            raise ArchiveRefused(
                "archive_too_large",
                f"the archive's images exceed {limits.max_expanded_bytes} bytes expanded",
            )
        if len(self.items) >= limits.max_images:
            raise ArchiveRefused(
                "archive_too_many", f"the archive holds more than {limits.max_images} images"
            )
        self.items.append(Item(len(self.items), name, offset, size))


def _list_zip(path: Path, limits: ArchiveLimits) -> list[Item]:
    tally = _Tally(limits)
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = safe_name(info.filename)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise ArchiveRefused("archive_link", f"member {name!r} is a link")
                if info.is_dir():
                    continue
                if info.flag_bits & 0x1:
                    raise ArchiveRefused("archive_encrypted", f"member {name!r} is encrypted")
                if _is_image(name, limits.extensions):
                    tally.add(name, info.file_size, packed=info.compress_size)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
        raise ArchiveRefused("archive_unreadable", f"the zip archive is damaged: {exc}") from exc
    return tally.items


def _list_tar(path: Path, limits: ArchiveLimits) -> list[Item]:
    tally = _Tally(limits)
    try:
        with tarfile.open(path, "r:") as archive:
            for member in archive:
                name = safe_name(member.name)
                if member.issym() or member.islnk():
                    raise ArchiveRefused("archive_link", f"member {name!r} is a link")
                if member.isdir():
                    continue
                if not member.isreg() or member.issparse():
                    raise ArchiveRefused(
                        "archive_special_file", f"member {name!r} is not a regular file"
                    )
                if _is_image(name, limits.extensions):
                    tally.add(name, member.size, offset=member.offset_data)
    except (tarfile.TarError, EOFError, ValueError) as exc:
        raise ArchiveRefused("archive_unreadable", f"the tar archive is damaged: {exc}") from exc
    return tally.items


def _gunzip(source: Path, target: Path, limits: ArchiveLimits) -> None:
    """Expand a .tar.gz to a plain tar (members then read by offset), refusing a bomb before
    it fills the disk."""
    packed = source.stat().st_size
    ceiling = limits.max_expanded_bytes + 1024 * (limits.max_images + 16)  # tar headers too
    written = 0
    try:
        with gzip.open(source, "rb") as stream, target.open("wb") as out:
            while block := stream.read(1024 * 1024):
                written += len(block)
                if written > ceiling or (
                    written > _RATIO_FLOOR and written > packed * limits.max_ratio
                ):
                    raise ArchiveRefused(
                        "archive_bomb", "the gzip stream expands far beyond any image archive"
                    )
                out.write(block)
    except (OSError, EOFError, zlib.error) as exc:
        target.unlink(missing_ok=True)
        raise ArchiveRefused("archive_unreadable", f"the gzip stream is damaged: {exc}") from exc
    except ArchiveRefused:
        target.unlink(missing_ok=True)
        raise


def open_archive(path: Path, limits: ArchiveLimits) -> tuple[str, Path, list[Item]]:
    """Check a spooled upload: its kind (zip or tar), the file to read members from (a .tar.gz
    is expanded beside it and removed) and its image members, in archive order."""
    kind = kind_of(path)
    if kind == "gzip":
        expanded = path.with_suffix(".tar")
        _gunzip(path, expanded, limits)
        path.unlink()
        path = expanded
        kind = TAR
    items = _list_zip(path, limits) if kind == ZIP else _list_tar(path, limits)
    if not items:
        raise ArchiveRefused("archive_empty", "the archive holds no images")
    return kind, path, items


class ArchiveReader:
    """Reads the members of one chunk; used as a context manager (one open file per chunk)."""

    def __init__(self, kind: str, path: Path, max_member_bytes: int) -> None:
        self.kind = kind
        self.path = path
        self.max_member_bytes = max_member_bytes
        self._zip: zipfile.ZipFile | None = None

    def __enter__(self) -> ArchiveReader:
        if self.kind == ZIP:
            self._zip = zipfile.ZipFile(self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._zip is not None:
            self._zip.close()

    def read(self, item: Item) -> bytes:
        try:
            if self._zip is not None:
                # The central directory's sizes were checked; the stream may still lie.
                with self._zip.open(item.name) as member:
                    data = member.read(self.max_member_bytes + 1)
            else:
                with self.path.open("rb") as file:
                    file.seek(item.offset)
                    data = file.read(item.size)
        except (zipfile.BadZipFile, zlib.error, EOFError, KeyError) as exc:
            raise ArchiveRefused("archive_unreadable", f"member {item.name!r}: {exc}") from exc
        if len(data) > self.max_member_bytes:
            raise ArchiveRefused("archive_member_too_large", f"member {item.name!r} is too large")
        return data

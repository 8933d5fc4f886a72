"""Manifests: lists of image paths under the storage roots the operator configured.

A client never makes the service fetch what it names: every path must lie under a configured
root (a folder, or an fsspec URL prefix such as ``s3://bucket/photos/``), checked when the job is
submitted and again, for local files, when it is read (a link swapped in meanwhile is caught).
Reading goes through ``fsspec``, so ``s3://`` and ``gs://`` work where their extras are
installed.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from urllib.parse import urlsplit

from ai_photo_detector.errors import InputError

MAX_PATH_LENGTH = 1024


def _manifest_error(message: str, code: str = "invalid_manifest") -> InputError:
    return InputError(message, code)


@dataclass(frozen=True)
class _Root:
    scheme: str  # "" for local folders
    netloc: str
    path: str  # local: resolved folder; remote: normalised prefix without its last "/"


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


class StorageRoots:
    """The places manifests may name, and the check that a path lies under one of them."""

    def __init__(self, roots: list[str]) -> None:
        self.roots: list[_Root] = []
        for root in roots:
            if _is_local(root):
                self.roots.append(_Root("", "", os.path.realpath(_local(root))))
            else:
                parts = urlsplit(root)
                prefix = posixpath.normpath("/" + parts.path.lstrip("/")).rstrip("/")
                self.roots.append(_Root(parts.scheme.lower(), parts.netloc, prefix))

    def check(self, path: str) -> str:
        """``path`` if it lies under a root, else a refusal naming it."""
        if not path or len(path) > MAX_PATH_LENGTH or "\x00" in path:
            raise _manifest_error(f"invalid path {path[:80]!r}")
        if _is_local(path):
            local = _local(path)
            if not os.path.isabs(local):
                raise _manifest_error(f"{path!r} is not an absolute path or URL")
            resolved = os.path.realpath(local)
            if any(
                r.scheme == "" and (resolved == r.path or resolved.startswith(r.path + os.sep))
                for r in self.roots
            ):
                return path
        else:
            parts = urlsplit(path)
            segments = parts.path.split("/")
            if parts.query or parts.fragment or ".." in segments or "." in segments:
                raise _manifest_error(f"{path!r} is not a plain object path")
            normal = posixpath.normpath("/" + parts.path.lstrip("/"))
            if any(
                r.scheme == parts.scheme.lower()
                and r.netloc == parts.netloc
                and normal.startswith(r.path + "/")
                for r in self.roots
            ):
                return path
        raise _manifest_error(
            f"{path!r} is not under a configured storage root (jobs.storage_roots)",
            "path_outside_roots",
        )


def parse_manifest(body: bytes, max_paths: int) -> list[str]:
    """Paths from ``{"paths": [...]}`` JSON or from text, one per line."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _manifest_error("the manifest is not UTF-8 text") from exc
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise _manifest_error(f"the manifest is not valid JSON: {exc.msg}") from exc
        paths = document.get("paths") if isinstance(document, dict) else None
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise _manifest_error('a JSON manifest is {"paths": ["...", ...]}')
    else:
        paths = [line.strip() for line in text.splitlines() if line.strip()]
    if not paths:
        raise _manifest_error("the manifest names no paths", "manifest_empty")
    if len(paths) > max_paths:
        raise _manifest_error(
            f"the manifest names {len(paths)} paths; at most {max_paths} per job",
            "manifest_too_many",
        )
    return paths


def read_path(path: str, roots: StorageRoots, max_bytes: int) -> bytes:
    """The bytes of one manifest path (checked again: links may have changed since)."""
    import fsspec

    roots.check(path)
    try:
        with fsspec.open(path, "rb") as file:
            data: bytes = file.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file", "not_found") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: {exc}", "unreadable") from exc
    if len(data) > max_bytes:
        raise InputError(f"{path} is larger than {max_bytes} bytes", "image_too_large")
    return data

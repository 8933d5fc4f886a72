"""The API keys the service accepts: those in its settings, and those of a mounted keys file
that it re-reads when the file changes, so a key rotates without a restart.

The file is checked at most every ``auth.reload_interval_s``, by its identity (inode, size,
modification time, following the symlink a Kubernetes Secret volume swaps); a file that cannot
be read or parsed leaves the last good keys in force, loudly, never none.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import TypeAdapter, ValidationError

from ai_photo_detector.settings import ApiKeyEntry, AuthSettings

logger = logging.getLogger(__name__)
KEY_PREFIX = "apd_"
_ENTRIES = TypeAdapter(list[ApiKeyEntry])


def hash_key(key: str) -> str:
    """Keys are random 256-bit tokens, so one SHA-256 is enough (no password stretching)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Match:
    entry: ApiKeyEntry
    expired: bool


def read_keys_file(path: Path) -> list[ApiKeyEntry]:
    """Entries of a keys file: a YAML or JSON list, or a mapping with a ``keys`` list."""
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    if isinstance(loaded, dict):
        loaded = loaded.get("keys")
    return _ENTRIES.validate_python(loaded or [])


class KeyRing:
    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.path = Path(settings.keys_file) if settings.keys_file else None
        self._entries: tuple[ApiKeyEntry, ...] = tuple(settings.keys)  # settings', then file's
        self._identity: tuple[int, int, int] | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()
        self.reload_errors = 0
        if self.path is not None:
            self._use(read_keys_file(self.path))  # a bad file at start: refuse to start
            self._identity = self._stat()

    @property
    def entries(self) -> tuple[ApiKeyEntry, ...]:
        self._refresh()
        return self._entries

    def _use(self, file_keys: list[ApiKeyEntry]) -> None:
        self._entries = (*self.settings.keys, *file_keys)

    def match(self, key: str | None, now: datetime | None = None) -> Match | None:
        """The entry of a presented key (compared with every entry, in constant time each)."""
        if key is None:
            return None
        digest = hash_key(key)
        found = None
        for entry in self.entries:
            if hmac.compare_digest(digest, entry.sha256):
                found = entry
        if found is None:
            return None
        moment = now or datetime.now(UTC)
        return Match(found, found.expires_at is not None and found.expires_at <= moment)

    def entry(self, key_id: str) -> ApiKeyEntry | None:
        return next((e for e in self.entries if e.id == key_id), None)

    def _stat(self) -> tuple[int, int, int] | None:
        assert self.path is not None
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return found.st_ino, found.st_size, found.st_mtime_ns

    def _refresh(self) -> None:
        if (
            self.path is None
            or time.monotonic() - self._checked_at < self.settings.reload_interval_s
        ):
            return
        with self._lock:
            if time.monotonic() - self._checked_at < self.settings.reload_interval_s:
                return
            self._checked_at = time.monotonic()
            identity = self._stat()
            if identity == self._identity:
                return
            try:
                keys = read_keys_file(self.path)
            except (OSError, yaml.YAMLError, ValidationError) as exc:
                self.reload_errors += 1
                logger.error("keys file %s not reloaded, the last keys stay: %s", self.path, exc)
                return
            self._use(keys)
            self._identity = identity
            logger.info("keys file %s reloaded: %d key(s)", self.path, len(keys))

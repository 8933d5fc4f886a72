"""Secrets that rotate without a restart: API keys from a mounted file re-read when it changes,
keys that expire, and every secret setting readable from a file (the _FILE convention)."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ai_photo_detector.client import Client, RetryPolicy
from ai_photo_detector.client import errors as client_errors
from ai_photo_detector.serving.keyring import KeyRing, hash_key
from ai_photo_detector.settings import AuthSettings, Settings
from live_service import live_service

OLD, NEW = "apd_rotation_old_key_0123456789abcdef", "apd_rotation_new_key_0123456789abcdef"


def _entry(key: str, key_id: str, **extra: object) -> dict[str, object]:
    return {"id": key_id, "sha256": hash_key(key), "scopes": ["predict"], **extra}


def _write(path: Path, entries: list[dict[str, object]]) -> None:
    """Replace the file at once, as a Kubernetes Secret volume swaps its symlink."""
    staged = path.with_suffix(".staged")
    staged.write_text(json.dumps({"keys": entries}))
    os.replace(staged, path)


def test_the_keyring_follows_its_file_and_keeps_the_last_good_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    _write(path, [_entry(OLD, "old")])
    ring = KeyRing(AuthSettings(keys_file=str(path), reload_interval_s=0.01))
    assert ring.match(OLD) is not None and ring.match(NEW) is None
    _write(path, [_entry(OLD, "old"), _entry(NEW, "new")])
    time.sleep(0.02)
    assert ring.match(NEW) is not None and ring.match(OLD) is not None
    path.write_text("keys: [{id: broken")  # a half-written or invalid file
    time.sleep(0.02)
    assert ring.match(NEW) is not None and ring.reload_errors == 1  # the last good keys stay
    path.unlink()
    time.sleep(0.02)
    assert ring.match(NEW) is not None  # a file that vanished for a moment changes nothing
    _write(path, [_entry(NEW, "new")])
    time.sleep(0.02)
    assert ring.match(OLD) is None and ring.match(NEW) is not None


def test_expired_keys_are_refused_with_their_own_code(tmp_path: Path, bundle_dir: Path) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    keys = [_entry(OLD, "old", expires_at=past), _entry(NEW, "new", expires_at=future)]
    settings = Settings(
        model=str(bundle_dir),
        environment="production",
        auth={"keys": keys},  # type: ignore[arg-type]
        database_url=f"sqlite:///{tmp_path / 'apd.db'}",
    )
    with live_service(settings) as url:
        with Client(url, OLD) as client, pytest.raises(client_errors.Unauthorized) as refused:
            client.models()
        assert refused.value.code == "api_key_expired" and "old" in refused.value.message
        with Client(url, NEW) as client:
            assert client.models().models


def test_a_key_rotates_under_load_without_a_failed_request(
    tmp_path: Path, bundle_dir: Path, tiny_dataset: Path
) -> None:
    path = tmp_path / "keys.json"
    _write(path, [_entry(OLD, "shop")])
    settings = Settings(
        model=str(bundle_dir),
        environment="production",
        auth={"keys_file": str(path), "reload_interval_s": 0.1},  # type: ignore[arg-type]
        database_url=f"sqlite:///{tmp_path / 'apd.db'}",
        rate_limit={"enabled": False},  # type: ignore[arg-type]
    )
    photo = next((tiny_dataset / "real").iterdir()).read_bytes()
    current = {"key": OLD}
    answered: list[str] = []
    failed: list[BaseException] = []
    stop = threading.Event()

    def load(url: str) -> None:  # a client that switches keys when its operator says so
        while not stop.is_set():
            key = current["key"]
            try:
                with Client(url, key, retry=RetryPolicy(max_attempts=1)) as client:
                    client.predict(photo)
                answered.append(key)
            except Exception as exc:
                failed.append(exc)

    with live_service(settings) as url:
        workers = [threading.Thread(target=load, args=(url,)) for _ in range(3)]
        for worker in workers:
            worker.start()
        try:
            time.sleep(0.5)
            _write(path, [_entry(OLD, "shop"), _entry(NEW, "shop-2026-12")])  # the overlap
            time.sleep(0.5)  # reloaded within reload_interval_s
            with Client(url, NEW) as client:
                assert client.predict(photo).band  # the new key works...
            with Client(url, OLD) as client:
                assert client.predict(photo).band  # ...and the old one still does
            current["key"] = NEW  # the client switches in time
            time.sleep(0.5)
            _write(path, [_entry(NEW, "shop-2026-12")])  # the old key is removed
            time.sleep(0.5)
        finally:
            stop.set()
            for worker in workers:
                worker.join(30)
        with Client(url, OLD) as client, pytest.raises(client_errors.Unauthorized) as refused:
            client.predict(photo)
    assert refused.value.code == "invalid_api_key"
    assert failed == [], failed[:3]
    assert OLD in answered and NEW in answered


def test_secret_settings_come_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "db").write_text("postgresql+psycopg://apd:s3cret@db:5432/apd\n")
    (tmp_path / "redis").write_text("redis://:s3cret@redis:6379/0")
    (tmp_path / "webhook").write_text("whsec_from_a_file_0123456789")
    (tmp_path / "keys").write_text(json.dumps([_entry(OLD, "ops")]))
    monkeypatch.delenv("APD_DATABASE_URL", raising=False)  # the tests' own store
    monkeypatch.setenv("APD_DATABASE_URL_FILE", str(tmp_path / "db"))
    monkeypatch.setenv("APD_RATE_LIMIT__STORAGE_URI_FILE", str(tmp_path / "redis"))
    monkeypatch.setenv("APD_WEBHOOKS__SECRET_FILE", str(tmp_path / "webhook"))
    monkeypatch.setenv("APD_AUTH__KEYS_FILE", str(tmp_path / "keys"))  # the re-read setting
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://apd:s3cret@db:5432/apd"
    assert settings.rate_limit.storage_uri == "redis://:s3cret@redis:6379/0"
    assert settings.webhooks.secret == "whsec_from_a_file_0123456789"
    assert settings.auth.keys_file == str(tmp_path / "keys") and settings.auth.keys == []
    monkeypatch.setenv("APD_AUTH__KEYS_FILE", "")
    monkeypatch.delenv("APD_AUTH__KEYS_FILE")
    monkeypatch.setenv(
        "APD_AUTH__KEYS_FILE".replace("KEYS_FILE", "KEYS") + "_FILE", str(tmp_path / "keys")
    )
    assert Settings().auth.keys_file == str(tmp_path / "keys")  # same variable: the setting wins
    monkeypatch.setenv("APD_DATABASE_URL_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="cannot read"):
        Settings()

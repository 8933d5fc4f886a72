"""Retraining on reviewed feedback: from the command's core, and started by an alert."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ai_photo_detector.model.bundle import load_bundle
from ai_photo_detector.persistence.audit import audit_log
from ai_photo_detector.persistence.store import Store
from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.settings import Settings
from conftest import quick_settings

pytest.importorskip("mlflow")

from ai_photo_detector.registry.registry import CHALLENGER, Registry
from ai_photo_detector.training.retrain import retrain

REVIEWED = 6


def _settings(tmp: Path, bundle_dir: Path, tiny_dataset: Path, **extra: Any) -> Settings:
    return quick_settings(
        tmp,
        model=str(bundle_dir),
        database_url=f"sqlite:///{tmp / 'store.db'}",
        prediction_log={"flush_interval_s": 0.05, "store_images": True, "image_dir": str(tmp)},
        registry={"cache_dir": str(tmp / "cache")},
        rate_limit={"enabled": False},
        retraining={"data": [str(tiny_dataset)], **extra.pop("retraining", {})},
        jobs={"in_process": False},
        **extra,
    )


@pytest.fixture
def reviewed(tmp_path: Path, bundle_dir: Path, tiny_dataset: Path) -> Iterator[Settings]:
    """Settings whose store holds REVIEWED predictions with their images and a verdict each."""
    settings = _settings(tmp_path, bundle_dir, tiny_dataset)
    with TestClient(create_app(settings)) as client:
        for path in sorted((tiny_dataset / "real").iterdir())[:REVIEWED]:
            answer = client.post("/v1/predict", content=path.read_bytes()).json()
            verdict = {"prediction_id": answer["prediction_id"], "label": "real"}
            assert client.post("/v1/feedback", json=verdict).status_code == 201
    yield settings


def test_retrain_adds_feedback_and_points_the_challenger(reviewed: Settings) -> None:
    store = Store(reviewed.database_url)
    try:
        report = retrain(reviewed, store, reason="drift on shoes", log=lambda _: None)
        assert report.status == "registered" and not report.gate_failures
        assert report.feedback["images_copied"] == REVIEWED and len(report.data) == 2
        manifest = load_bundle(report.bundle).manifest
        assert sum(manifest.dataset.splits.values()) == 48 + REVIEWED  # base + reviewed
        feedback_source = Path(report.data[-1]).name
        assert manifest.training["settings"]["boosted_sources"] == [feedback_source]
        assert feedback_source in manifest.dataset.sources
        # The gates compared held-out sources with the model the deployment serves.
        assert Path(report.compared_with or "").resolve() == Path(reviewed.model).resolve()
        registry = Registry(reviewed, store)
        assert registry.alias_version(CHALLENGER) == report.registry_version
        assert report.challenger == f"models:/{registry.name}@challenger"
        event = next(e for e in audit_log(store) if e["action"] == "retrain")
        assert event["alias"] == CHALLENGER and event["reason"] == "drift on shoes"
    finally:
        store.close()


def test_a_failed_gate_moves_no_alias(reviewed: Settings) -> None:
    strict = reviewed.model_copy(update={"gates": reviewed.gates.model_copy(update={"max_ece": 0})})
    store = Store(strict.database_url)
    try:
        report = retrain(strict, store, log=lambda _: None)
        assert report.status == "gates_failed" and report.registry_version is None
        assert any("ECE" in failure or "ece" in failure for failure in report.gate_failures)
        assert Registry(strict, store).alias_version(CHALLENGER) is None
        event = next(e for e in audit_log(store) if e["action"] == "retrain")
        assert event["alias"] == "" and event["details"]["status"] == "gates_failed"
    finally:
        store.close()


def _alert(name: str, status: str = "firing") -> dict[str, Any]:
    return {"alerts": [{"status": status, "labels": {"alertname": name}}]}


def test_an_alert_starts_one_retrain_then_shadow_follows(
    tmp_path: Path, bundle_dir: Path, tiny_dataset: Path
) -> None:
    settings = _settings(
        tmp_path,
        bundle_dir,
        tiny_dataset,
        retraining={"on_alert": True, "cooldown_hours": 1, "shadow_fraction": 0.5},
    )
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/alerts", json=_alert("APDHighLatencyP95")).json()["retrain"] is None
        resolved = _alert("APDDriftCritical", "resolved")
        assert client.post("/v1/alerts", json=resolved).json()["retrain"] is None
        assert client.post("/v1/alerts", json=_alert("APDDriftCritical")).json()["retrain"] == (
            "started"
        )
        again = client.post("/v1/alerts", json=_alert("APDLiveAccuracyDrop")).json()
        assert again["retrain"] == "skipped"  # one at a time

        store = Store(settings.database_url)
        try:
            deadline = time.monotonic() + 300
            actions: list[str] = []
            while time.monotonic() < deadline:
                actions = [e["action"] for e in audit_log(store)]
                if "retrain_finished" in actions or "retrain_failed" in actions:
                    break
                time.sleep(0.5)
            events = audit_log(store)
        finally:
            store.close()
        finished = next((e for e in events if e["action"] == "retrain_finished"), None)
        assert finished is not None, events[:3]
        assert finished["details"]["status"] == "registered"
        assert [e["action"] for e in events].count("retrain_started") == 1
        rollout = client.get("/v1/rollout").json()
        assert rollout["challenger"] is not None and rollout["shadow"]["fraction"] == 0.5
        # Within the cool-down a new alert starts nothing.
        assert client.post("/v1/alerts", json=_alert("APDDriftCritical")).json()["retrain"] == (
            "skipped"
        )

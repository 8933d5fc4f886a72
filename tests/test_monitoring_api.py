"""Prediction ids, feedback, live accuracy, drift runs and history, alerts, over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from reliability.faults import wait_for_rows

from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.serving.keyring import hash_key
from ai_photo_detector.settings import Settings

ADMIN = "apd_monitoring_admin_key_0123456789"


def _settings(bundle_dir: Path, database: Path, **extra: object) -> Settings:
    return Settings(  # type: ignore[arg-type]
        model=str(bundle_dir),
        database_url=f"sqlite:///{database}",
        prediction_log={"flush_interval_s": 0.05},
        monitoring={"min_window": 10, "window_count": 40, "interval_s": 3600},
        auth={"keys": [{"id": "ops", "sha256": hash_key(ADMIN), "scopes": ["admin"]}]},
        **extra,
    )


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "monitoring.db"


@pytest.fixture
def client(bundle_dir: Path, database: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(bundle_dir, database))) as test_client:
        yield test_client


def _predict_all(client: TestClient, folder: Path) -> list[dict[str, object]]:
    return [
        client.post("/v1/predict", content=path.read_bytes()).json()
        for path in sorted(folder.iterdir())
    ]


def test_feedback_flow_and_live_accuracy(client: TestClient, tiny_dataset: Path) -> None:
    answers = _predict_all(client, tiny_dataset / "ai")[:6]
    ids = [str(answer["prediction_id"]) for answer in answers]
    assert len(set(ids)) == 6
    first = client.post("/v1/feedback", json={"prediction_id": ids[0], "label": "ai"})
    assert first.status_code == 201 and first.json()["created"] is True
    again = client.post("/v1/feedback", json={"prediction_id": ids[0], "label": "ai"})
    assert again.status_code == 200 and again.json()["created"] is False
    for prediction_id in ids[1:]:
        assert (
            client.post(
                "/v1/feedback", json={"prediction_id": prediction_id, "label": "ai"}
            ).status_code
            == 201
        )
    unknown = client.post("/v1/feedback", json={"prediction_id": "0" * 32, "label": "ai"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "prediction_not_found"
    bad_label = client.post("/v1/feedback", json={"prediction_id": ids[0], "label": "cat"})
    assert bad_label.status_code == 422 and bad_label.json()["error"]["code"] == "invalid_label"
    malformed = client.post("/v1/feedback", json={"label": "ai"})
    assert malformed.status_code == 422 and malformed.json()["error"]["code"] == "invalid_request"

    accuracy = client.get("/v1/feedback/accuracy").json()
    [model] = accuracy["models"]
    expected = sum(answer["label"] == "ai" for answer in answers) / 6
    assert model["count"] == 6 and model["accuracy"] == pytest.approx(expected)
    assert model["model"]["version"] == "test"
    metrics = client.get("/metrics").text
    assert "apd_feedback_total{" in metrics
    assert "apd_prediction_log_written_total" in metrics


def test_drift_run_history_gauges_and_restart(
    bundle_dir: Path, database: Path, tiny_dataset: Path
) -> None:
    settings = _settings(bundle_dir, database)
    with TestClient(create_app(settings)) as client:
        for _ in range(2):
            _predict_all(client, tiny_dataset / "ai")
            _predict_all(client, tiny_dataset / "real")
        refused = client.post("/v1/drift/run", headers={"X-API-Key": "apd_wrong"})
        assert refused.status_code == 401
        run = client.post("/v1/drift/run", headers={"X-API-Key": ADMIN})
        assert run.status_code == 200, run.text
        windows = {entry["window"] for entry in run.json()["reports"]}
        assert windows == {"count:40", "time:24h"}
        counted = next(e for e in run.json()["reports"] if e["window"] == "count:40")
        assert counted["size"] == 40
        assert set(counted["report"]["detectors"]) == {
            "score",
            "image_stats",
            "labels",
            "embedding",
        }
        metrics = client.get("/metrics").text
        for name in (
            "apd_drift_detected",
            "apd_drift_p_value",
            "apd_drift_statistic",
        ):
            assert f"{name}{{" in metrics, name
        assert 'detector="embedding"' in metrics
        exported = [
            line for line in metrics.splitlines() if line.startswith("apd_drift_statistic{")
        ]
        for detector, statistic in (("score", "psi"), ("embedding", "mmd2")):
            assert any(
                f'detector="{detector}"' in line and f'statistic="{statistic}"' in line
                for line in exported
            ), (detector, statistic)
    with TestClient(create_app(settings)) as client:  # restart: history is in the store
        drift = client.get("/v1/drift").json()
        assert len(drift["history"]) == 2
        assert {entry["window"] for entry in drift["latest"]} == {"count:40", "time:24h"}


def test_alertmanager_webhook_is_recorded(client: TestClient) -> None:
    payload = {
        "version": "4",
        "status": "firing",
        "receiver": "apd",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "APDDriftDetected", "severity": "warning"},
                "annotations": {"summary": "drift"},
                "startsAt": "2026-11-27T00:00:00Z",
                "fingerprint": "abc123",
            }
        ],
    }
    response = client.post("/v1/alerts", json=payload, headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200 and response.json() == {"recorded": 1, "retrain": None}
    assert 'apd_alerts_received_total{status="firing"} 1.0' in client.get("/metrics").text
    from sqlalchemy import select

    from ai_photo_detector.persistence.schema import Alert

    store = client.app.state.services.store  # type: ignore[attr-defined]
    with store.session() as session:
        [alert] = session.scalars(select(Alert)).all()
    assert alert.name == "APDDriftDetected" and alert.severity == "warning"


def test_alerts_need_the_admin_scope_in_production(bundle_dir: Path, database: Path) -> None:
    settings = _settings(bundle_dir, database, environment="production")
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/alerts", json={"alerts": []}).status_code == 401


def test_stored_images_are_exported_as_a_training_dataset(
    bundle_dir: Path,
    database: Path,
    tiny_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from ai_photo_detector.cli import app as cli

    images = tmp_path / "kept"
    settings = _settings(bundle_dir, database)
    settings = settings.model_copy(
        update={
            "prediction_log": settings.prediction_log.model_copy(
                update={"store_images": True, "image_dir": str(images)}
            )
        }
    )
    with TestClient(create_app(settings)) as client:
        answers = _predict_all(client, tiny_dataset / "ai")[:4]
        for answer, label in zip(answers, ["ai", "ai", "real", "ai"], strict=True):
            client.post(
                "/v1/feedback", json={"prediction_id": answer["prediction_id"], "label": label}
            )
    assert len(list(images.glob("*/*.jpeg"))) == 24  # every prediction's image kept
    monkeypatch.setenv("APD_DATABASE_URL", f"sqlite:///{database}")
    out = tmp_path / "dataset"
    result = CliRunner().invoke(cli, ["feedback", "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(list((out / "ai").iterdir())) == 3 and len(list((out / "real").iterdir())) == 1
    from ai_photo_detector.data.discovery import discover

    samples = discover([out / "manifest.csv"], [".jpeg"])  # train --data reads it as is
    assert sorted(s.label for s in samples) == ["ai", "ai", "ai", "real"]


def test_logged_image_statistics_equal_the_training_side_ones(
    client: TestClient, tiny_dataset: Path
) -> None:
    """No train/serve skew in drift inputs: the prediction log measures each upload exactly as
    the drift reference was measured at training time (scoring with statistics)."""
    from sqlalchemy import select

    from ai_photo_detector.data.discovery import Sample as DataSample
    from ai_photo_detector.evaluation.scoring import score_samples
    from ai_photo_detector.image_stats import STAT_NAMES
    from ai_photo_detector.model.inference import OnnxDetector
    from ai_photo_detector.persistence.schema import Prediction

    paths = sorted((tiny_dataset / "real").iterdir())[:4]
    answers = {
        client.post("/v1/predict", content=p.read_bytes()).json()["prediction_id"]: p for p in paths
    }
    services = client.app.state.services  # type: ignore[attr-defined]
    assert services.prediction_log.flush()
    with services.store.session() as session:
        rows = session.scalars(select(Prediction).where(Prediction.id.in_(answers))).all()
    assert len(rows) == len(paths)
    model = services.models.get(None)
    scored = score_samples(
        OnnxDetector(model.bundle), [DataSample(p, "real", "t") for p in paths], with_stats=True
    )
    for row in rows:
        index = paths.index(answers[row.id])
        for name in STAT_NAMES:
            assert getattr(row, name) == pytest.approx(scored.stats[name][index], rel=1e-6), name


def test_feedback_during_a_database_outage_is_503_and_recovers(
    bundle_dir: Path, tiny_dataset: Path, postgres_url: str
) -> None:
    """The service's PostgreSQL database disappears (renamed away under it) and comes back:
    feedback answers 503 with Retry-After meanwhile, never 500, and works again after."""
    from sqlalchemy import create_engine, text

    name = postgres_url.rsplit("/", 1)[1]
    admin = create_engine(postgres_url.rsplit("/", 1)[0] + "/test", isolation_level="AUTOCOMMIT")

    def rename(old: str, new: str) -> None:
        with admin.connect() as connection:
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": old},
            )
            connection.execute(text(f'ALTER DATABASE "{old}" RENAME TO "{new}"'))

    settings = Settings(
        model=str(bundle_dir), database_url=postgres_url, prediction_log={"flush_interval_s": 0.05}
    )
    photo = sorted((tiny_dataset / "ai").iterdir())[0].read_bytes()
    try:
        with TestClient(create_app(settings)) as client:
            first = client.post("/v1/predict", content=photo).json()["prediction_id"]
            second = client.post("/v1/predict", content=photo).json()["prediction_id"]
            found, _ = wait_for_rows(postgres_url, 2, timeout=30)  # the writer's own pace
            assert found == 2, "the log writer did not store both predictions within 30 s"
            rename(name, name + "_away")
            try:
                down = client.post("/v1/feedback", json={"prediction_id": first, "label": "ai"})
                assert down.status_code == 503, down.text
                assert down.json()["error"]["code"] == "store_unavailable"
                assert int(down.headers["retry-after"]) >= 1
                assert client.post("/v1/predict", content=photo).status_code == 200
            finally:
                rename(name + "_away", name)
            back = client.post("/v1/feedback", json={"prediction_id": second, "label": "ai"})
            assert back.status_code == 201, back.text
    finally:
        admin.dispose()

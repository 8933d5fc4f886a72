"""The operations view's queries (SQLite and PostgreSQL) and its API with scopes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ai_photo_detector.persistence.alerts import AlertRecord, record_alerts
from ai_photo_detector.persistence.drift_history import save_report
from ai_photo_detector.persistence.feedback import record_feedback
from ai_photo_detector.persistence.ops import (
    Window,
    accuracy_over_time,
    band_shares,
    recent_alerts,
)
from ai_photo_detector.persistence.predictions import PredictionLog, PredictionRecord
from ai_photo_detector.persistence.store import Store
from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.serving.api.routes.ops import feedback_figures
from ai_photo_detector.serving.keyring import hash_key
from ai_photo_detector.settings import PredictionLogSettings, Settings
from conftest import SHIPPED_MODEL
from test_store import record

NOW = datetime(2025, 3, 10, 12, 30, tzinfo=UTC)
TEN, ELEVEN = datetime(2025, 3, 10, 10, tzinfo=UTC), datetime(2025, 3, 10, 11, tzinfo=UTC)
PREDICT_KEY = "apd_predict_key_for_ops_tests_0123456789"
OPS_KEY = "apd_ops_key_for_ops_tests_0123456789"
ADMIN_KEY = "apd_admin_key_for_ops_tests_0123456789"
KEYS = [
    {"id": "shop", "sha256": hash_key(PREDICT_KEY), "scopes": ["predict"]},
    {"id": "tns", "sha256": hash_key(OPS_KEY), "scopes": ["ops"]},
    {"id": "root", "sha256": hash_key(ADMIN_KEY), "scopes": ["admin"]},
]


def answer(
    i: int,
    at: datetime,
    label: str = "ai",
    band: str | None = None,
    reasons: str = "",
    version: str = "1",
    route: str = "primary",
) -> PredictionRecord:
    row = record(i, model_version=version, label=label)
    return replace(row, created_at=at, band=band or row.band, reasons=reasons, route=route)


def write(store: Store, rows: list[PredictionRecord]) -> None:
    log = PredictionLog(store, PredictionLogSettings(flush_interval_s=0.05))
    for row in rows:
        assert log.submit(row)
    assert log.flush(10)
    log.close()


def seed_answers(store: Store, ten: datetime, eleven: datetime) -> dict[str, PredictionRecord]:
    """Two hours of answers: bands, reasons, a shadow row, reviews on two model versions."""
    rows = {
        "ai": answer(1, ten + timedelta(minutes=10, microseconds=123456)),
        "real": answer(2, ten + timedelta(minutes=20), label="real"),
        "unsure": answer(3, ten + timedelta(minutes=30), band="uncertain", reasons="low_margin"),
        "unsure_both": answer(
            4, ten + timedelta(minutes=40), band="uncertain", reasons="low_margin,unfamiliar"
        ),
        "shadow": answer(5, ten + timedelta(minutes=41), route="shadow", version="2"),
        "late_ai": answer(6, eleven + timedelta(minutes=5)),
        "late_ai_2": answer(7, eleven + timedelta(minutes=6), reasons="reviewed_kind"),
        "late_unfamiliar": answer(
            8, eleven + timedelta(minutes=7), label="real", band="uncertain", reasons="unfamiliar"
        ),
        "v2": answer(9, eleven + timedelta(minutes=8), label="real", version="2"),
        "old": answer(10, ten - timedelta(days=2)),
    }
    write(store, list(rows.values()))
    record_feedback(store, rows["ai"].id, "ai", "reviewer")  # right
    record_feedback(store, rows["real"].id, "ai", "reviewer")  # wrong
    record_feedback(store, rows["late_ai"].id, "real", "reviewer")  # wrong at first...
    record_feedback(store, rows["late_ai"].id, "ai", "second-opinion")  # ...the latest says right
    record_feedback(store, rows["v2"].id, "real", "reviewer")  # right
    record_feedback(store, rows["old"].id, "real", "reviewer")  # wrong, two days before
    return rows


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = Store(database_url)
    yield opened
    opened.close()


def test_a_window_is_whole_buckets_up_to_the_one_holding_now() -> None:
    hourly = Window.ending(NOW, 1, "hour")
    assert (hourly.start, hourly.end) == (
        NOW.replace(day=9, minute=0),
        NOW.replace(hour=13, minute=0),
    )
    daily = Window.ending(NOW, 3, "day")
    assert daily.start == datetime(2025, 3, 7, tzinfo=UTC)
    assert daily.end == datetime(2025, 3, 11, tzinfo=UTC)


def test_accuracy_per_model_version_and_hour(store: Store) -> None:
    seed_answers(store, TEN, ELEVEN)
    first, second = accuracy_over_time(store, Window.ending(NOW, 1, "hour"))
    assert (first.model_name, first.model_version) == ("detector", "1")
    assert [(p.start, p.reviewed, p.correct) for p in first.points] == [(TEN, 2, 1), (ELEVEN, 1, 1)]
    assert first.points[0].accuracy == 0.5 and first.points[1].accuracy == 1.0
    assert first.reviewed == 3 and first.accuracy == pytest.approx(2 / 3)
    assert second.model_version == "2"
    assert [(p.start, p.reviewed, p.correct) for p in second.points] == [(ELEVEN, 1, 1)]


def test_accuracy_per_day_reaches_back_as_far_as_asked(store: Store) -> None:
    seed_answers(store, TEN, ELEVEN)
    first, _ = accuracy_over_time(store, Window.ending(NOW, 3, "day"))
    days = [(p.start.day, p.reviewed, p.correct) for p in first.points]
    assert days == [(8, 1, 0), (10, 3, 2)]


def test_nothing_reviewed_is_no_series(store: Store) -> None:
    write(store, [answer(1, TEN)])
    assert accuracy_over_time(store, Window.ending(NOW, 1, "hour")) == []
    assert band_shares(store, Window.ending(NOW - timedelta(days=5), 1, "hour")) == []


def test_band_counts_and_reasons_per_hour_on_the_primary_route(store: Store) -> None:
    seed_answers(store, TEN, ELEVEN)
    ten, eleven = band_shares(store, Window.ending(NOW, 1, "hour"))
    assert ten.start == TEN and ten.total == 4
    assert ten.bands == {"ai": 1, "real": 1, "uncertain": 2}
    assert ten.reasons == {"low_margin": 2, "unfamiliar": 1}
    assert eleven.start == ELEVEN and eleven.total == 4
    assert eleven.bands == {"ai": 2, "real": 1, "uncertain": 1}
    assert eleven.reasons == {"unfamiliar": 1, "reviewed_kind": 1}
    [day] = band_shares(store, Window.ending(NOW, 1, "day"))  # the old answer is out of range
    assert day.start == datetime(2025, 3, 10, tzinfo=UTC) and day.total == 8


def test_recent_alerts_newest_first(store: Store) -> None:
    def alert(name: str) -> AlertRecord:
        return AlertRecord(name, "firing", "warning", "2025-03-10T10:00:00Z", {"model": "m"})

    record_alerts(store, [alert("First")])
    record_alerts(store, [alert("Second"), alert("Third")])
    newest = recent_alerts(store, 2)
    assert [a.name for a in newest] == ["Third", "Second"]
    assert newest[0].labels == {"model": "m"} and newest[0].received_at.tzinfo is not None
    assert [a.name for a in recent_alerts(store, 10)] == ["Third", "Second", "First"]


# --- the API --------------------------------------------------------------------------------


@pytest.fixture
def service(database_url: str) -> Iterator[TestClient]:
    """The shipped model behind keys, over a store with two hours of answers, drift and alerts."""
    store = Store(database_url)
    now = datetime.now(UTC)
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    seed_answers(store, this_hour - timedelta(hours=1), this_hour)
    for severity in ("critical", "warning"):  # the warning is the newer one
        report = {"drift": True, "severity": severity, "window_size": 500, "detectors": {}}
        save_report(store, "ai-photo-detector", "2.3.0", "count:500", report)
    quiet = {"drift": False, "severity": "none", "window_size": 500, "detectors": {}}
    save_report(store, "ai-photo-detector", "1.0.0", "count:500", quiet)  # a challenger's
    summary = {"summary": "live accuracy under 80 %"}
    record_alerts(
        store,
        [AlertRecord("APDLiveAccuracyLow", "firing", "critical", now.isoformat(), {}, summary)],
    )
    store.close()
    settings = Settings(  # type: ignore[arg-type]
        model=str(SHIPPED_MODEL),
        database_url=database_url,
        environment="production",
        auth={"keys": KEYS},
        monitoring={"enabled": False},
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_ops_routes_need_the_ops_or_admin_scope(service: TestClient) -> None:
    for path in ("/v1/ops/overview", "/v1/ops/accuracy", "/v1/ops/bands", "/v1/ops/alerts"):
        assert service.get(path).status_code == 401
        refused = service.get(path, headers={"X-API-Key": PREDICT_KEY})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "insufficient_scope"
        for key in (OPS_KEY, ADMIN_KEY):
            assert service.get(path, headers={"X-API-Key": key}).status_code == 200, path
    # ops reads the view, nothing else
    assert service.get("/v1/drift", headers={"X-API-Key": OPS_KEY}).status_code == 403


def test_the_overview_answers_everything_the_page_shows(service: TestClient) -> None:
    answer = service.get("/v1/ops/overview?days=1", headers={"X-API-Key": OPS_KEY})
    assert answer.status_code == 200
    body = answer.json()
    assert body["window"]["days"] == 1 and body["window"]["bucket"] == "hour"
    first, second = body["accuracy"]
    assert first["model"] == {"name": "detector", "version": "1"}
    assert first["reviewed"] == 3 and first["accuracy"] == pytest.approx(2 / 3)
    assert [(p["reviewed"], p["correct"]) for p in first["points"]] == [(2, 1), (1, 1)]
    assert second["model"]["version"] == "2" and second["accuracy"] == 1.0
    earlier, later = body["bands"]
    assert earlier["bands"] == {"ai": 1, "real": 1, "uncertain": 2}
    assert earlier["reason_shares"] == {"low_margin": 0.5, "unfamiliar": 0.25}
    assert later["total"] == 4
    assert later["reason_shares"] == {"unfamiliar": 0.25, "reviewed_kind": 0.25}
    # the champion's latest report is not hidden by its challenger's, which shares its name
    challenger, champion = body["drift"]["latest"]
    assert (challenger["model"]["version"], challenger["severity"]) == ("1.0.0", "none")
    assert (champion["model"]["version"], champion["severity"]) == ("2.3.0", "warning")
    assert champion["window"] == "count:500"
    severities = [entry["severity"] for entry in body["drift"]["history"]]
    assert severities == ["none", "warning", "critical"]
    assert body["models"]["default"] == "ai-photo-detector"
    assert body["models"]["models"][0]["version"] == "2.3.0"
    assert body["rollout"]["champion"]["name"] == "ai-photo-detector"
    assert body["rollout"]["challenger"] is None and body["rollout"]["canary"]["weight"] == 0.0
    [alert] = body["alerts"]
    assert alert["name"] == "APDLiveAccuracyLow" and alert["summary"] == "live accuracy under 80 %"
    loop = body["loop"]
    assert loop["unfamiliar_share"] == 0.25 and loop["unfamiliar_share_latest"] == 0.25
    # one answer of eight, in the later hour, was caught by a reviewed kind's band
    assert loop["reviewed_kind_share"] == 0.125 and loop["reviewed_kind_share_latest"] == 0.25
    assert loop["waiting"]["uncertain"] == 3  # the three uncertain answers, none reviewed
    # five reviewed predictions, none with its upload kept: nothing a retrain could use
    assert loop["next_retrain"] == {
        "photos": 0,
        "from_uncertain": 0,
        "without_image": 5,
        "window_days": 90,
    }
    [champion_loop] = loop["models"]
    assert champion_loop["model"]["version"] == "2.3.0" and champion_loop["role"] == "champion"
    assert champion_loop["feedback"] == []  # trained on the shared sets only


def test_the_loop_shows_a_retrained_models_figures_on_its_feedback() -> None:
    rows = [
        {"source": "shoes-midjourney", "fit": "held_out", "count": 1846, "roc_auc": 0.93},
        {
            "source": "feedback-2.4.0",
            "fit": "cross_fitted",
            "count": 40,
            "roc_auc": 0.81,
            "ai_band_tpr": 0.35,
            "ai_band_fpr": float("nan"),  # no real photo among them
            "uncertain_share": 0.6,
        },
    ]
    [figures] = feedback_figures({"leave_one_source_out": {"rows": rows}})
    assert (figures.source, figures.count, figures.roc_auc) == ("feedback-2.4.0", 40, 0.81)
    assert figures.ai_band_tpr == 0.35 and figures.ai_band_fpr is None
    assert feedback_figures({}) == []  # a bundle evaluated on one source has no such rows


def test_the_finer_routes_and_their_limits(service: TestClient) -> None:
    headers = {"X-API-Key": ADMIN_KEY}
    daily = service.get("/v1/ops/bands?bucket=day&days=30", headers=headers).json()
    assert sum(bucket["total"] for bucket in daily["buckets"]) == 9  # the old one too
    assert daily["window"]["bucket"] == "day"
    accuracy = service.get("/v1/ops/accuracy?days=3", headers=headers).json()
    assert [series["reviewed"] for series in accuracy["series"]] == [4, 1]  # the old one too
    assert len(service.get("/v1/ops/alerts?limit=1", headers=headers).json()["alerts"]) == 1
    for query, code in (
        ("/v1/ops/bands?bucket=hour&days=32", "too_many_buckets"),
        ("/v1/ops/bands?days=0", "invalid_request"),
        ("/v1/ops/accuracy?bucket=week", "invalid_request"),
        ("/v1/ops/alerts?limit=0", "invalid_request"),
    ):
        refused = service.get(query, headers=headers)
        assert refused.status_code == 422, query
        assert set(refused.json()["error"]) == {"code", "message", "request_id"}
        assert refused.json()["error"]["code"] == code


def test_the_ops_routes_are_documented_with_the_one_error_shape(service: TestClient) -> None:
    schema = service.get("/openapi.json", headers={"X-API-Key": OPS_KEY}).json()
    for path in ("/v1/ops/overview", "/v1/ops/accuracy", "/v1/ops/bands", "/v1/ops/alerts"):
        responses = schema["paths"][path]["get"]["responses"]
        assert {"200", "401", "403", "422", "429", "503"} <= set(responses)
    assert "HTTPValidationError" not in str(schema["paths"])


def test_an_empty_store_answers_empty_series(tmp_path: Path) -> None:
    settings = Settings(model=str(SHIPPED_MODEL), database_url=f"sqlite:///{tmp_path}/empty.db")
    with TestClient(create_app(settings)) as client:  # development: no key needed
        body = client.get("/v1/ops/overview").json()
    assert body["accuracy"] == [] and body["bands"] == [] and body["alerts"] == []
    assert body["drift"] == {"latest": [], "history": []}

"""The two-region drill, short: both regions and the global front start, region a goes down
under load and comes back, and nothing acknowledged is lost (reliability/regions.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from reliability import regions

from ai_photo_detector.client import NO_RETRY, Client
from ai_photo_detector.client import errors as client_errors
from ai_photo_detector.ids import new_id, region_of
from ai_photo_detector.settings import Settings
from live_service import free_port, live_service

needs_front = pytest.mark.skipif(
    shutil.which("haproxy") is None or shutil.which("redis-server") is None,
    reason="needs haproxy and redis-server (.ci/run installs them)",
)


@needs_front
def test_losing_a_region_loses_nothing_acknowledged() -> None:
    report = regions.drill(outage_s=6.0, load_s=3.0)
    assert report["failed_during_switch"] == 0, report
    assert report["failed_after"] == 0, report
    acknowledged = report["predictions_acknowledged"]
    assert set(acknowledged) == {"a", "b"} and all(n > 0 for n in acknowledged.values()), report
    assert report["predictions_lost"] == {"a": 0, "b": 0}, report
    assert report["feedback_acknowledged"] > 0 and report["feedback_lost"] == 0, report
    assert report["feedback_deferred_answers"] >= 0
    assert all(j["status"] == "done" and j["result_rows"] == j["total"] for j in report["jobs"])
    assert report["front_marked_down_after_s"] < 10
    assert report["version_b_during_outage"].endswith("/2")
    assert report["promotion_reached_returning_region"], report


def test_ids_carry_their_region() -> None:
    tagged = new_id("eu")
    assert len(tagged) == 32 and tagged.startswith("eu-") and region_of(tagged) == "eu"
    assert region_of(new_id()) is None and len(new_id()) == 32
    assert region_of("EU-1234") is None and region_of("toolongname-1234") is None


def _region(tmp: Path, bundle_dir: Path, name: str, peers: dict[str, str]) -> Settings:
    return Settings(
        model=str(bundle_dir),
        database_url=f"sqlite:///{tmp / name}.db",
        region={"name": name, "peers": peers},  # type: ignore[arg-type]
        rate_limit={"enabled": False},  # type: ignore[arg-type]
    )


def test_feedback_lands_in_the_region_that_made_the_prediction(
    tmp_path: Path, bundle_dir: Path, tiny_dataset: Path
) -> None:
    photo = next((tiny_dataset / "ai").iterdir()).read_bytes()
    port_a = free_port()
    a_url = f"http://127.0.0.1:{port_a}"
    with live_service(_region(tmp_path, bundle_dir, "b", {"a": a_url, "c": a_url})) as b_url:
        with Client(b_url) as b:
            made_in_b = b.predict(photo)
        assert made_in_b.prediction_id.startswith("b-")
        assert httpx.get(f"{b_url}/v1/models").headers["x-apd-region"] == "b"

        a_settings = _region(tmp_path, bundle_dir, "a", {"b": b_url})
        with Client(b_url, retry=NO_RETRY) as b, pytest.raises(client_errors.RegionUnavailable):
            b.feedback(f"a-{'0' * 30}", "ai")  # region a is down: retry later, nothing stored
        with live_service(a_settings, port=port_a), Client(a_url) as a:
            made_in_a = a.predict(photo)
            with Client(b_url) as b:  # sent to the wrong region: passed to a, stored there
                stored = b.feedback(made_in_a.prediction_id, "real", source="moderator")
                again = b.feedback(made_in_a.prediction_id, "real", source="moderator")
            assert stored.created and not again.created
            assert stored.model.version == made_in_a.model.version
            with pytest.raises(client_errors.NotFound):  # a does not hold it either
                a.feedback(f"c-{'0' * 30}", "ai")
        with Client(b_url) as b, pytest.raises(client_errors.NotInRegion):
            b.feedback(f"zz-{'0' * 29}", "ai")  # a region b does not know


def test_retraining_reads_every_regions_feedback(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from ai_photo_detector.persistence.feedback import export_dataset, record_feedback
    from ai_photo_detector.persistence.predictions import PredictionLog
    from ai_photo_detector.persistence.store import Store
    from ai_photo_detector.settings import PredictionLogSettings
    from test_store import record

    stores = [Store(f"sqlite:///{tmp_path / name}.db") for name in ("a", "b")]
    for n, store in enumerate(stores):
        log = PredictionLog(store, PredictionLogSettings(flush_interval_s=0.05))
        items = [record(10 * n + i) for i in range(3)]
        for item in items:
            log.submit(item)
        assert log.flush(10)
        log.close()
        for item in items:
            record_feedback(store, item.id, "ai", "reviewer")
    since = datetime.now(UTC) - timedelta(hours=1)
    summary = export_dataset(stores[0], tmp_path / "export", since, stores[1:])
    assert summary["reviewed"] == 6
    for store in stores:
        store.close()

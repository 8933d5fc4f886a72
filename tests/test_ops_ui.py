"""The operations page at /ui/ops.html, end to end: a real service process with a champion and
a challenger, its SQLite store seeded from here, the page read in headless Chromium.

``APD_SCREENSHOTS=docs/images`` also saves the seeded page as ``ops.png`` there (the README's).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from ai_photo_detector.persistence.alerts import AlertRecord, record_alerts
from ai_photo_detector.persistence.drift_history import save_report
from ai_photo_detector.persistence.feedback import record_feedback
from ai_photo_detector.persistence.predictions import PredictionRecord
from ai_photo_detector.persistence.store import Store
from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.serving.keyring import hash_key
from ai_photo_detector.settings import Settings
from conftest import FAST_MODEL, SHIPPED_MODEL
from test_ops import write
from test_server import _free_port, _start
from test_store import record

OPS_KEY = "apd_ops_key_for_the_ops_page_0123456789"
NAME = "ai-photo-detector"
CHAMPION, CHALLENGER = "2.3.0", "1.0.1"  # versions of models/default and models/fast


def test_the_page_and_its_assets_are_served_with_a_strict_policy(tmp_path: Path) -> None:
    settings = Settings(model=str(SHIPPED_MODEL), database_url=f"sqlite:///{tmp_path}/ui.db")
    with TestClient(create_app(settings)) as client:
        page = client.get("/ui/ops.html")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        for asset, kind in (("ops.js", "javascript"), ("ops.css", "text/css")):
            assert asset in page.text
            assert kind in client.get(f"/ui/{asset}").headers["content-type"]
        assert "<script>" not in page.text and " style=" not in page.text  # nothing inline
        script = client.get("/ui/ops.js").text
        assert "http://" not in script.replace("http://www.w3.org/2000/svg", "")  # own origin
        assert "https://" not in script


# Twelve hours, oldest first: answers per band and reason, and the champion's reviews. The
# photos drift (ever more unfamiliar ones) and the champion grows less accurate.
HOURS = [  # (ai, real, uncertain low_margin, uncertain unfamiliar, reviewed, of them wrong)
    (9, 14, 2, 0, 4, 0),
    (8, 15, 2, 1, 4, 0),
    (10, 13, 1, 0, 4, 1),
    (9, 12, 2, 1, 4, 0),
    (11, 14, 3, 1, 4, 1),
    (8, 13, 2, 2, 4, 1),
    (9, 11, 3, 2, 4, 1),
    (10, 12, 2, 3, 4, 1),
    (9, 10, 3, 4, 4, 2),
    (8, 11, 2, 5, 4, 1),
    (10, 9, 3, 6, 4, 2),
    (9, 10, 2, 7, 4, 2),
]
CANARY_HOURS = 3  # the challenger answered two callers in each of the last three hours
COUNT_WINDOW = ["none"] * 6 + ["warning", "warning", "critical"]  # drift checks, oldest first
TIME_WINDOW = ["none"] * 8 + ["warning"]


def _answer(
    i: int, at: datetime, band: str, version: str = CHAMPION, reasons: str = ""
) -> PredictionRecord:
    label = "real" if band == "real" or (band == "uncertain" and i % 2) else "ai"
    row = record(i, model_version=version, label=label)
    return replace(row, model_name=NAME, created_at=at, band=band, reasons=reasons)


def seed(database: Path) -> int:
    """Answers, reviews, drift reports and alerts as above; returns how many answers."""
    store = Store(f"sqlite:///{database}")
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rows: list[PredictionRecord] = []
    reviews: list[tuple[str, str]] = []
    for back, (ai, real, low_margin, unfamiliar, reviewed, wrong) in zip(
        range(len(HOURS) - 1, -1, -1), HOURS, strict=True
    ):
        hour = now - timedelta(hours=back)
        kinds = [("ai", "")] * ai + [("real", "")] * real
        kinds += [("uncertain", "low_margin")] * low_margin
        kinds += [("uncertain", "unfamiliar")] * unfamiliar
        made = [
            _answer(len(rows) + n, hour + timedelta(minutes=n), band, reasons=reasons)
            for n, (band, reasons) in enumerate(kinds)
        ]
        for n, row in enumerate(made[:reviewed]):  # the first answers are ai ones
            reviews.append((row.id, "real" if n < wrong else "ai"))
        rows += made
        if back < CANARY_HOURS:
            for n in range(2):
                canary = _answer(len(rows), hour + timedelta(minutes=58 + n), "ai", CHALLENGER)
                reviews.append((canary.id, "ai"))
                rows.append(canary)
    write(store, rows)
    for prediction_id, verdict in reviews:
        record_feedback(store, prediction_id, verdict, "reviewer")
    for count, time in zip(COUNT_WINDOW, TIME_WINDOW, strict=True):
        for window, severity in (("count:500", count), ("time:24h", time)):
            report = {"drift": severity != "none", "severity": severity, "window_size": 500}
            save_report(store, NAME, CHAMPION, window, report)
    skipped = {"drift": False, "severity": "none", "window_size": 6, "skipped": "6 predictions"}
    save_report(store, NAME, CHALLENGER, "count:500", skipped)
    accuracy_low = AlertRecord(
        "APDLiveAccuracyLow",
        "resolved",
        "warning",
        (now - timedelta(hours=2)).isoformat(),
        annotations={"summary": "live accuracy under 80 % for 30 min"},
    )
    record_alerts(store, [accuracy_low])
    drift_critical = AlertRecord(
        "APDDriftCritical",
        "firing",
        "critical",
        now.isoformat(),
        {"model": NAME},
        {"summary": "critical drift on the count window"},
    )
    record_alerts(store, [drift_critical])
    store.close()
    return len(rows)


def test_the_operations_page_shows_the_state_of_the_service(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    database = tmp_path / "ops.db"
    keys = [{"id": "tns", "sha256": hash_key(OPS_KEY), "scopes": ["ops"]}]
    port = _free_port()
    server = _start(
        SHIPPED_MODEL,
        port,
        {
            "APD_DATABASE_URL": f"sqlite:///{database}",
            "APD_ENVIRONMENT": "production",
            "APD_AUTH__KEYS": json.dumps(keys),
            "APD_MONITORING__ENABLED": "false",  # the drift reports here are the seeded ones
            "APD_ROLLOUT__CHALLENGER": str(FAST_MODEL),
            "APD_ROLLOUT__CANARY_WEIGHT": "0.1",
            "APD_ROLLOUT__SHADOW_FRACTION": "0.25",
        },
    )
    driver = browser
    driver.set_window_size(1280, 900)
    wait = WebDriverWait(driver, 30)

    def text(element_id: str) -> str:
        return str(driver.find_element(By.ID, element_id).text)

    try:
        driver.get(f"http://127.0.0.1:{port}/ui/ops.html")
        wait.until(ready.text_to_be_present_in_element((By.ID, "status"), "missing_api_key"))
        driver.find_element(By.ID, "api-key").send_keys(OPS_KEY + Keys.TAB)  # change: refresh
        wait.until(ready.text_to_be_present_in_element((By.ID, "status"), "updated"))

        # An empty store reads as such, and the serving state is already there.
        assert "no reviewed predictions yet" in text("accuracy-chart")
        assert "no answers yet" in text("bands-chart")
        assert "no drift report yet" in text("drift-status")
        assert "no alerts recorded" in text("alerts")
        assert text("champion") == f"{NAME} {CHAMPION}"
        assert text("champion-ref") == "local bundle, no registry reference"
        assert text("challenger") == f"{NAME} {CHALLENGER}"
        assert text("canary") == "10.0 %" and text("shadow") == "25.0 %"

        answers = seed(database)
        driver.find_element(By.ID, "refresh").click()
        wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#bands-chart g.bar")))

        values = driver.find_elements(By.CSS_SELECTOR, "#accuracy-summary li")
        assert [v.text for v in values] == [  # 36 of the champion's 48 reviews are right
            f"{NAME} {CHALLENGER}: 100.0 % of 6 reviewed",
            f"{NAME} {CHAMPION}: 75.0 % of 48 reviewed",
        ]
        assert len(driver.find_elements(By.CSS_SELECTOR, "#accuracy-chart path.accuracy-line")) == 2
        points = driver.find_elements(By.CSS_SELECTOR, "#accuracy-chart circle.accuracy-point")
        assert len(points) == CANARY_HOURS + len(HOURS)
        bars = driver.find_elements(By.CSS_SELECTOR, "#bands-chart g.bar")
        assert len(bars) == len(HOURS)
        oldest = bars[0].find_element(By.TAG_NAME, "title").get_attribute("textContent")
        assert "25 answers (ai 9, uncertain 2, real 14); reasons: low_margin 8.0 %" in oldest
        newest = bars[-1].find_element(By.TAG_NAME, "title").get_attribute("textContent")
        assert "30 answers (ai 11, uncertain 9, real 10)" in newest  # with two canary answers
        assert "low_margin 6.7 %, unfamiliar 23.3 %" in newest
        assert text("bands-summary").startswith(f"{answers} answers in this range")

        drift = [
            row.text for row in driver.find_elements(By.CSS_SELECTOR, "#drift-status tbody tr")
        ]
        assert drift[0].startswith(f"{NAME} {CHALLENGER} count:500 none not tested: 6 predictions")
        assert drift[1].startswith(f"{NAME} {CHAMPION} time:24h warning yes 500")
        assert drift[2].startswith(f"{NAME} {CHAMPION} count:500 critical yes 500")
        strips = driver.find_elements(By.CSS_SELECTOR, "#drift-history .strip")
        assert len(strips) == 3  # one per model version and window, the first checked first
        for strip, severities in zip(strips, (COUNT_WINDOW, TIME_WINDOW, ["none"]), strict=True):
            cells = strip.find_elements(By.CSS_SELECTOR, ".cell")
            assert [c.get_attribute("class") for c in cells] == [
                f"cell sev-{s}" for s in severities
            ]

        unfamiliar = sum(hour[3] for hour in HOURS)
        assert text("loop-unfamiliar") == f"{100 * unfamiliar / answers:.1f} %"
        assert text("loop-caught") == "0.0 %"  # no model here has a reviewed kind
        assert text("loop-waiting") == str(sum(hour[2] + hour[3] for hour in HOURS))
        assert text("loop-ready") == "0 photos"  # reviewed, but no upload was kept
        assert "reviewed without a kept upload (unused)" in text("loop-ready-note")
        loop_rows = driver.find_elements(By.CSS_SELECTOR, "#loop-models tbody tr")
        assert [row.text for row in loop_rows] == [
            f"{NAME} {version} {role} trained without reviewed feedback"
            for version, role in ((CHAMPION, "champion"), (CHALLENGER, "challenger"))
        ]

        alerts = driver.find_elements(By.CSS_SELECTOR, "#alerts tbody tr")
        assert "APDDriftCritical firing critical critical drift" in alerts[0].text
        assert "APDLiveAccuracyLow resolved warning" in alerts[1].text

        folder = os.environ.get("APD_SCREENSHOTS")
        if folder:  # only when asked: a normal run writes nothing into the repository
            Path(folder).mkdir(parents=True, exist_ok=True)
            metrics = {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)  # no chrome
            driver.execute_script("window.scrollTo(0, 0)")
            assert driver.save_screenshot(str(Path(folder) / "ops.png"))
    finally:
        server.terminate()
        server.wait(timeout=30)

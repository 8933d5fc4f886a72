"""The review queue page at /ui/queue.html in headless Chromium, against a real service and a
real store: two reviewers in two tabs never get the same item, one works through the queue by
keyboard, verdicts land as feedback, and many photos are scored into an exportable table."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import httpx
from PIL import Image
from skimage import data

from ai_photo_detector.model.bundle import load_bundle
from ai_photo_detector.serving.keyring import hash_key
from conftest import SHIPPED_MODEL
from helpers import encode
from test_server import _free_port, _start

ALICE, BOB, SHOP = (
    "apd_alice_key_for_tests_0123456789",
    "apd_bob_key_for_tests_012345",
    "apd_shop_0123456789abcdef",
)
KEYS = [
    {"id": "alice", "sha256": hash_key(ALICE), "scopes": ["review", "predict"]},
    {"id": "bob", "sha256": hash_key(BOB), "scopes": ["review", "predict"]},
    {"id": "shop", "sha256": hash_key(SHOP), "scopes": ["predict"]},
]


def _open_queue(driver: object, url: str, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)  # type: ignore[attr-defined]
    box = driver.find_element(By.ID, "api-key")  # type: ignore[attr-defined]
    box.clear()
    box.send_keys(key)
    driver.execute_script(  # type: ignore[attr-defined]
        "arguments[0].dispatchEvent(new Event('change'))", box
    )
    driver.find_element(By.ID, "start").click()  # type: ignore[attr-defined]


def _shown_id(driver: object, wait: object, previous: str | None = None) -> str:
    """The prediction id of the item on screen, once it differs from ``previous``."""
    from selenium.webdriver.common.by import By

    def changed(_: object) -> str | bool:
        item = driver.find_element(By.ID, "item")  # type: ignore[attr-defined]
        shown = item.get_attribute("data-prediction-id")
        return shown if item.is_displayed() and shown and shown != previous else False

    return str(wait.until(changed))  # type: ignore[attr-defined]


def test_two_reviewers_and_a_keyboard_session(browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    database = tmp_path / "queue.db"
    port = _free_port()
    env = {
        "APD_DATABASE_URL": f"sqlite:///{database}",
        "APD_ENVIRONMENT": "production",
        "APD_AUTH__KEYS": json.dumps(KEYS),
        "APD_PREDICTION_LOG__STORE_IMAGES": "true",
        "APD_PREDICTION_LOG__IMAGE_DIR": str(tmp_path / "images"),
        "APD_PREDICTION_LOG__FLUSH_INTERVAL_S": "0.05",
        "APD_REVIEW__SAMPLE_RATE": "1.0",  # every confident answer is queued too
        "APD_RATE_LIMIT__ENABLED": "false",
    }
    server = _start(SHIPPED_MODEL, port, env)
    base = f"http://127.0.0.1:{port}"
    photos = []  # real photographs (scikit-image's samples), as a reviewer would see them
    for name in ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field"):
        photos.append(tmp_path / f"{name}.jpg")
        photos[-1].write_bytes(encode(Image.fromarray(getattr(data, name)()), quality=90))
    try:
        with httpx.Client(base_url=base, headers={"X-API-Key": SHOP}, timeout=30) as shop:
            for photo in photos:
                assert shop.post("/v1/predict", content=photo.read_bytes()).status_code == 200
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the log writes in batches: wait for all five
            queue = httpx.get(f"{base}/v1/review/queue", headers={"X-API-Key": ALICE}).json()
            if sum(queue["counts"].values()) == len(photos):
                break
            time.sleep(0.1)
        assert sum(queue["counts"].values()) == len(photos)

        driver = browser
        wait = WebDriverWait(driver, 30)
        _open_queue(driver, f"{base}/ui/queue.html", ALICE)
        alice_first = _shown_id(driver, wait)
        wait.until(  # the retained upload is shown, and the evidence beside it
            lambda _: driver.find_element(By.ID, "photo").get_property("naturalWidth") > 0  # type: ignore[attr-defined]
        )
        wait.until(
            lambda _: driver.find_element(By.ID, "overlay").get_property("naturalWidth") > 0  # type: ignore[attr-defined]
        )
        rows, columns = load_bundle(SHIPPED_MODEL).manifest.onnx.feature_shape[1:]
        assert len(driver.find_elements(By.CSS_SELECTOR, "#grid td")) == rows * columns  # type: ignore[attr-defined]
        if os.environ.get("APD_SCREENSHOTS"):  # the README's picture: make readme-screenshots
            driver.set_window_size(1280, 1000)  # type: ignore[attr-defined]
            folder = Path(os.environ["APD_SCREENSHOTS"])
            driver.save_screenshot(str(folder / "review-queue.png"))  # type: ignore[attr-defined]
        alice_tab = driver.current_window_handle  # type: ignore[attr-defined]

        driver.switch_to.new_window("tab")  # type: ignore[attr-defined]
        _open_queue(driver, f"{base}/ui/queue.html", BOB)  # another reviewer, another key
        bob_first = _shown_id(driver, wait)
        assert bob_first != alice_first

        driver.switch_to.window(alice_tab)  # type: ignore[attr-defined]
        body = driver.find_element(By.TAG_NAME, "body")  # type: ignore[attr-defined]
        seen = [alice_first]
        for key in ("a", "r", "s"):  # AI, real, skip: each brings the next item at once
            body.send_keys(key)
            seen.append(_shown_id(driver, wait, previous=seen[-1]))
        assert bob_first not in seen, "an item leased to bob was offered to alice"
        assert len(set(seen)) == 4
        wait.until(ready.text_to_be_present_in_element((By.ID, "done"), "2"))
        assert "Waiting:" in driver.find_element(By.ID, "counts").text  # type: ignore[attr-defined]

        body.send_keys("a")  # the last item alice may take
        wait.until(ready.text_to_be_present_in_element((By.ID, "status"), "Nothing waits"))

        # Many photos at once: one row per photo, then CSV export is offered.
        driver.find_element(By.ID, "batch-files").send_keys(  # type: ignore[attr-defined]
            "\n".join(str(p) for p in photos[:3])
        )
        wait.until(ready.text_to_be_present_in_element((By.ID, "batch-status"), "3 of 3"))
        cells = driver.find_elements(By.CSS_SELECTOR, "#batch-table tbody tr")  # type: ignore[attr-defined]
        assert len(cells) == 3
        assert driver.find_element(By.ID, "export").is_enabled()  # type: ignore[attr-defined]
    finally:
        server.terminate()
        server.wait(timeout=30)
    with sqlite3.connect(database) as connection:
        logged = connection.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
        feedback = dict(
            connection.execute(
                "SELECT prediction_id, label FROM feedback WHERE source = ?", ("review:alice",)
            )
        )
        skips = connection.execute("SELECT prediction_id, reviewer FROM review_skips").fetchall()
    assert feedback == {seen[0]: "ai", seen[1]: "real", seen[3]: "ai"}
    assert skips == [(seen[2], "alice")]
    assert logged == len(photos) + 3  # the batch table's three; evidence for review logs none

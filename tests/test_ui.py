"""The review page at /ui/: served safely, and working in a real browser (headless Chromium)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from ai_photo_detector.model.bundle import load_bundle
from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.settings import Settings
from conftest import SHIPPED_MODEL
from helpers import encode, patterned_image
from test_server import _free_port, _start


def test_the_page_and_its_assets_are_served_with_a_strict_policy(tmp_path: Path) -> None:
    settings = Settings(model=str(SHIPPED_MODEL), database_url=f"sqlite:///{tmp_path}/ui.db")
    with TestClient(create_app(settings)) as client:
        page = client.get("/ui/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy
        assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        for asset, kind in (("app.js", "javascript"), ("style.css", "text/css")):
            assert asset in page.text
            response = client.get(f"/ui/{asset}")
            assert response.status_code == 200 and kind in response.headers["content-type"]
        assert "<script>" not in page.text and " style=" not in page.text  # nothing inline
        queue = client.get("/ui/queue.html")
        assert queue.headers["content-security-policy"] == policy
        for asset, kind in (("queue.js", "javascript"), ("queue.css", "text/css")):
            assert asset in queue.text
            assert kind in client.get(f"/ui/{asset}").headers["content-type"]
        assert "<script>" not in queue.text and " style=" not in queue.text
        # The API keeps its own, stricter policy.
        api = client.get("/v2/health/live")
        assert api.headers["content-security-policy"].startswith("default-src 'none'")
        assert "script-src" not in api.headers["content-security-policy"]
        assert client.get("/ui/../settings.py").status_code == 404
    off = Settings(  # type: ignore[arg-type]
        model=str(SHIPPED_MODEL), database_url=f"sqlite:///{tmp_path}/off.db", server={"ui": False}
    )
    with TestClient(create_app(off)) as client:
        assert client.get("/ui/").status_code == 404


def test_a_reviewer_explains_a_photo_and_records_a_verdict(browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    database = tmp_path / "review.db"
    photo = tmp_path / "listing.jpg"
    photo.write_bytes(encode(patterned_image(np.random.default_rng(2), 480), quality=92))
    noise = tmp_path / "noise.jpg"
    pixels = np.random.default_rng(3).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    noise.write_bytes(encode(Image.fromarray(pixels), quality=90))
    generated = tmp_path / "generated.jpg"
    exif = Image.Exif()
    exif[0x0131] = "Midjourney v6"  # EXIF Software, as generators write it
    generated.write_bytes(encode(patterned_image(np.random.default_rng(4), 480), exif=exif))
    port = _free_port()
    server = _start(SHIPPED_MODEL, port, {"APD_DATABASE_URL": f"sqlite:///{database}"})
    try:
        driver = browser  # a selenium WebDriver
        driver.get(f"http://127.0.0.1:{port}/ui/")  # type: ignore[attr-defined]
        wait = WebDriverWait(driver, 30)
        driver.find_element(By.ID, "file").send_keys(str(photo))  # type: ignore[attr-defined]
        wait.until(ready.visibility_of_element_located((By.ID, "result")))
        label = driver.find_element(By.ID, "label").text  # type: ignore[attr-defined]
        assert label in {"ai", "real"}
        assert "% AI" in driver.find_element(By.ID, "probability").text  # type: ignore[attr-defined]
        overlay = driver.find_element(By.ID, "overlay")  # type: ignore[attr-defined]
        assert overlay.get_attribute("src").startswith("data:image/jpeg;base64,")
        manifest = load_bundle(SHIPPED_MODEL).manifest
        size, (rows, columns) = manifest.preprocessing.input_size, manifest.onnx.feature_shape[1:]
        wait.until(lambda _: overlay.get_property("naturalWidth") == size)  # it decoded
        cells = driver.find_elements(By.CSS_SELECTOR, "#grid td")  # type: ignore[attr-defined]
        assert len(cells) == rows * columns
        opposite = "real" if label == "ai" else "ai"
        driver.find_element(  # type: ignore[attr-defined]
            By.CSS_SELECTOR, f"#feedback-buttons button[data-label='{opposite}']"
        ).click()
        wait.until(ready.text_to_be_present_in_element((By.ID, "feedback-status"), "recorded"))
        assert "disagrees" in driver.find_element(By.ID, "feedback-status").text  # type: ignore[attr-defined]

        # Noise is like nothing the model was trained on: the page says why it is uncertain.
        driver.find_element(By.ID, "file").send_keys(str(noise))  # type: ignore[attr-defined]
        wait.until(ready.text_to_be_present_in_element((By.ID, "reasons"), "unlike anything"))
        assert driver.find_element(By.ID, "band").text == "band: uncertain"  # type: ignore[attr-defined]
        assert "no origin metadata" in driver.find_element(By.ID, "provenance").text  # type: ignore[attr-defined]

        # A file that names its generator: the page shows the provenance evidence.
        driver.find_element(By.ID, "file").send_keys(str(generated))  # type: ignore[attr-defined]
        wait.until(ready.text_to_be_present_in_element((By.ID, "provenance"), "Midjourney"))
    finally:
        server.terminate()
        server.wait(timeout=30)
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT label, source FROM feedback").fetchall()
    assert rows == [(opposite, "review-ui")]

"""docs/integration.md runs: its Python blocks, in order, against a live service.

The page's convention, checked here:

- a block fenced ```` ```python ```` is runnable: every one is executed, in page order, in one
  shared namespace (``exec``), as a reader would paste them into one script;
- Python only to be read is fenced ```` ```python-snippet ````; ``bash``, ``yaml`` and ``text``
  blocks (and tables) are never run. Any other fence is an error, so a typo cannot silently
  take a block out of the test.

The runnable blocks rely on names this test provides, as the page lists them: ``SERVICE_URL``
(a real service from ``live_service``, with API keys required, jobs worked off in process, the
review queue sampling every answer, webhooks allowed to reach loopback over http and the v1.0
compatibility routes on), ``WEBHOOK_SECRET`` (the key's ``webhook_secret``), ``LISTING_PHOTOS``
(a folder of real and AI photos), ``RECEIVER_ADDRESS`` and ``CALLBACK_URL`` (a free loopback
port, where the page's own receiver listens), and the key in ``APD_API_KEY``.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai_photo_detector.client import Client
from ai_photo_detector.contract.schemas import JobEvent
from ai_photo_detector.contract.signatures import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    signature_header,
)
from ai_photo_detector.serving.keyring import hash_key
from ai_photo_detector.settings import Settings
from live_service import free_port, live_service

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "integration.md"
RUNNABLE = "python"
READ_ONLY = {"python-snippet", "bash", "yaml", "text"}
FENCE = re.compile(r"^```(\S*)\s*$")

KEY = "apd_integration_doc_key_0123456789abcd"
SECRET = "whsec_listings_0123456789abcdef"
V1_FIELDS = {"prediction", "probability", "confidence", "inference_time_ms", "model_version"}


def runnable_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, source) of each ```python block, in page order."""
    blocks: list[tuple[int, str]] = []
    language: str | None = None
    start = 0
    lines: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fence = FENCE.match(line)
        if fence is None:
            if language is not None:
                lines.append(line)
            continue
        if language is None:  # an opening fence
            language = fence.group(1)
            assert language == RUNNABLE or language in READ_ONLY, (
                f"docs/integration.md:{number}: unknown fence {line!r}"
            )
            start, lines = number + 1, []
        else:  # the closing fence
            assert fence.group(1) == "", f"docs/integration.md:{number}: unclosed block"
            if language == RUNNABLE:
                blocks.append((start, "\n".join(lines) + "\n"))
            language = None
    assert language is None, "docs/integration.md: a block is never closed"
    return blocks


def _settings(tmp: Path, bundle_dir: Path) -> Settings:
    return Settings(
        model=str(bundle_dir),
        environment="production",
        auth={  # type: ignore[arg-type]
            "keys": [
                {
                    "id": "listings",
                    "sha256": hash_key(KEY),
                    "scopes": ["predict", "jobs", "review"],
                    "webhook_secret": SECRET,
                }
            ],
            "open_paths": ["/v2/health/live", "/v2/health/ready", "/metrics", "/health"],
        },
        database_url=f"sqlite:///{tmp / 'apd.db'}",
        rate_limit={"enabled": False},  # type: ignore[arg-type]
        prediction_log={  # type: ignore[arg-type]
            "flush_interval_s": 0.1,
            "store_images": True,  # the review queue's photo and evidence map
            "image_dir": str(tmp / "images"),
        },
        review={"sample_rate": 1.0},  # type: ignore[arg-type]
        server={"compat_v1": True},  # type: ignore[arg-type]
        jobs={  # type: ignore[arg-type]
            "queue_url": f"sqlite:///{tmp / 'queue.db'}",
            "spool_dir": str(tmp / "spool"),
            "chunk_size": 4,
            "reap_interval_s": 0.2,
            "in_process": True,  # the suite sets APD_JOBS__IN_PROCESS=false in the environment
        },
        webhooks={  # type: ignore[arg-type]
            "allowed_networks": ["127.0.0.1/32"],
            "schemes": ["http"],
            "backoff_s": 0.3,
            "max_backoff_s": 2.0,
            "poll_interval_s": 0.2,
            "timeout_s": 5.0,
        },
    )


def _listing_photos(tiny_dataset: Path, folder: Path) -> Path:
    """Four real and four AI photos in one flat folder, as new uploads would be."""
    folder.mkdir()
    for label in ("real", "ai"):
        for photo in sorted((tiny_dataset / label).glob("*.jpg"))[:4]:
            shutil.copy(photo, folder / photo.name)
    return folder


def _until(condition: Any, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_the_pages_code_blocks_are_well_fenced() -> None:
    blocks = runnable_blocks(PAGE.read_text(encoding="utf-8"))
    assert len(blocks) >= 10
    for start, source in blocks:
        compile(source, f"docs/integration.md:{start}", "exec")


def test_the_integration_page_runs_against_a_live_service(
    tmp_path: Path,
    bundle_dir: Path,
    tiny_dataset: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("APD_API_KEY", KEY)
    monkeypatch.delenv("APD_API_KEY_FILE", raising=False)
    monkeypatch.chdir(REPO)  # the contract block reads docs/openapi.json as a pinned copy
    photos = _listing_photos(tiny_dataset, tmp_path / "incoming")
    port = free_port()
    receiver_url = f"http://127.0.0.1:{port}/apd-events"
    namespace: dict[str, Any] = {"__name__": "integration_doc"}

    with live_service(_settings(tmp_path, bundle_dir)) as url:
        namespace.update(
            SERVICE_URL=url,
            WEBHOOK_SECRET=SECRET,
            LISTING_PHOTOS=photos,
            RECEIVER_ADDRESS=("127.0.0.1", port),
            CALLBACK_URL=receiver_url,
        )
        try:
            for start, source in runnable_blocks(PAGE.read_text(encoding="utf-8")):
                exec(compile(source, f"docs/integration.md:{start}", "exec"), namespace)
            _assert_what_the_page_produced(namespace, url, photos, receiver_url)
        finally:
            if "receiver" in namespace:
                namespace["receiver"].shutdown()
                namespace["receiver"].server_close()
            if "client" in namespace:
                namespace["client"].close()
    assert "rejected upload:" in capsys.readouterr().out


def _assert_what_the_page_produced(
    ns: dict[str, Any], url: str, photos: Path, receiver_url: str
) -> None:
    names = sorted(p.name for p in photos.glob("*.jpg"))

    # 2. scoring: every photo has a band, a calibrated probability and a next step
    answers = ns["answers"]
    assert sorted(answers) == names
    for answer in answers.values():
        assert answer.band in ns["NEXT_STEP"] and 0.0 <= answer.probability <= 1.0
        assert set(answer.scores) == {"ai", "real"} and answer.prediction_id
        assert (answer.band == "uncertain") == bool(set(answer.reasons) - {"provenance"})
    assert (ns["batch"].succeeded, ns["batch"].failed) == (3, 1)
    assert sorted(ns["scored"]) == names

    # 3. review: feedback is one verdict per prediction and source; the queue took a verdict
    assert ns["first"].created and not ns["again"].created and not ns["again"].updated
    assert ns["claimed"] is not None and ns["verdict"].recorded
    assert ns["verdict"].prediction_id == ns["claimed"].prediction_id

    # 5. the job: one job for two submissions, every photo scored, the event verified
    job, event = ns["job"], ns["event"]
    assert ns["same"].id == job.id and ns["finished"].status == "done"
    assert isinstance(event, JobEvent) and event.job.id == job.id and event.type == "job.done"
    assert event.job.done == len(names) and event.id in ns["seen_event_ids"]
    assert sorted(row.name for row in ns["rows"]) == names
    assert all(row.error is None and row.band for row in ns["rows"])
    with Client(url) as client:  # the page's own client is closed by now
        _until(lambda: client.job(job.id).callback.status == "delivered")
        callback = client.job(job.id).callback
    assert callback.url == receiver_url
    assert [(a.status_code, a.error) for a in callback.attempts] == [(204, None)]

    # 4. the page's receiver: a repeat is answered 200 and dropped, a forgery refused
    body = event.model_dump_json().encode()
    headers = {
        SIGNATURE_HEADER: signature_header(SECRET, body),
        EVENT_HEADER: event.type,
        DELIVERY_HEADER: event.id,
        "Content-Type": "application/json",
    }
    assert httpx.post(receiver_url, content=body, headers=headers).status_code == 200
    forged = {**headers, SIGNATURE_HEADER: signature_header("whsec_not_the_secret_0123", body)}
    assert httpx.post(receiver_url, content=body, headers=forged).status_code == 401
    tampered = body.replace(b'"job.done"', b'"job.cancelled"')
    assert httpx.post(receiver_url, content=tampered, headers=headers).status_code == 401
    assert httpx.post(receiver_url, content=body).status_code == 401  # no signature at all
    assert ns["job_events"].empty()

    # 7. the contract: the live service breaks nothing of the committed document
    assert ns["breaks"] == [] and ns["live"]["info"]["version"] == ns["API_VERSION"]

    # 8. the v1.0 routes answer in v1.0's shape, from the same scoring
    v1 = ns["v1_answer"]
    assert set(v1) == V1_FIELDS
    assert v1["prediction"] in {"ai_generated", "real"}
    assert v1["confidence"] in {"low", "medium", "high"}
    assert v1["probability"] == pytest.approx(answers[names[0]].probability, abs=1e-4)
    assert ns["health"]["status"] == "healthy" and ns["health"]["model_loaded"]

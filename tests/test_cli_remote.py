"""The command line against a running service: predict over a folder gives the verdicts of
/v1/predict one by one (a bad photo reported, the rest scored), explain, jobs and feedback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ai_photo_detector.cli import app as cli
from ai_photo_detector.client import Client
from ai_photo_detector.serving.keyring import hash_key
from ai_photo_detector.settings import Settings
from live_service import live_service

KEY = "apd_cli_remote_tests_key_0123456789ab"
KEYS = [{"id": "cli", "sha256": hash_key(KEY), "scopes": ["predict", "jobs"]}]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("cli-remote")
    settings = Settings(
        model=str(bundle_dir),
        environment="production",
        auth={"keys": KEYS},  # type: ignore[arg-type]
        database_url=f"sqlite:///{tmp / 'apd.db'}",
        rate_limit={"enabled": False},  # type: ignore[arg-type]
        jobs={  # type: ignore[arg-type]
            "queue_url": f"sqlite:///{tmp / 'queue.db'}",
            "spool_dir": str(tmp / "spool"),
            "chunk_size": 8,
            "in_process": True,
        },
    )
    with live_service(settings) as url:
        yield url


@pytest.fixture
def folder(tiny_dataset: Path, tmp_path: Path) -> Path:
    photos = tmp_path / "listing"
    shutil.copytree(tiny_dataset, photos)
    (photos / "real" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return photos


def _lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_predict_over_a_folder_matches_the_api_one_by_one(
    service: str, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APD_API_KEY", KEY)
    result = CliRunner().invoke(
        cli, ["predict", str(folder), "--url", service, "--json", "--concurrency", "4"]
    )
    assert result.exit_code == 0, result.output
    rows = _lines(result.stdout)
    photos = sorted(p for p in folder.rglob("*.jpg"))
    assert [row["path"] for row in rows] == [str(p) for p in photos]  # every photo, in order
    broken = [row for row in rows if "error" in row]
    assert [row["path"] for row in broken] == [str(folder / "real" / "broken.jpg")]
    assert "1 file(s) could not be scored" in result.stderr
    with Client(service, KEY) as client:
        for row in rows:
            if "error" in row:
                continue
            alone = client.predict(Path(str(row["path"])))
            assert (row["label"], row["band"]) == (alone.label, alone.band)
            assert row["probability"] == pytest.approx(alone.probability, abs=1e-6)
            assert row["prediction_id"] != alone.prediction_id  # both logged


def test_predict_text_output_and_key_file(service: str, folder: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    photo = next((folder / "ai").iterdir())
    result = CliRunner().invoke(
        cli, ["predict", str(photo), "--url", service, "--api-key-file", str(key_file)]
    )
    assert result.exit_code == 0, result.output
    path, label, band, probability = result.stdout.strip().split("\t")[:4]
    assert path == str(photo) and label in {"ai", "real"} and band in {"ai", "real", "uncertain"}
    assert 0 <= float(probability) <= 1
    refused = CliRunner().invoke(cli, ["predict", str(photo), "--url", service, "--json"])
    assert refused.exit_code == 0  # one photo's failure is a line, not an abort
    assert _lines(refused.stdout)[0]["error"] == {  # no key: the service's own error
        "code": "missing_api_key",
        "message": _lines(refused.stdout)[0]["error"]["message"],  # type: ignore[index]
    }


def test_explain_writes_the_overlay(
    service: str, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APD_API_KEY", KEY)
    photo = next((folder / "ai").iterdir())
    out = tmp_path / "why.jpg"
    result = CliRunner().invoke(
        cli, ["explain", str(photo), "--url", service, "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["grid"] and shown["overlay"] == str(out)
    assert out.read_bytes()[:3] == b"\xff\xd8\xff"


def test_jobs_and_feedback_from_the_shell(
    service: str, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APD_API_KEY", KEY)
    monkeypatch.setenv("APD_URL", service)
    runner = CliRunner()
    submitted = runner.invoke(cli, ["jobs", "submit", str(folder / "ai"), "--wait", "--json"])
    assert submitted.exit_code == 0, submitted.output
    status = json.loads(submitted.stdout)
    photos = len(list((folder / "ai").iterdir()))
    assert status["status"] == "done" and status["done"] == photos
    shown = runner.invoke(cli, ["jobs", "status", status["id"]])
    assert shown.exit_code == 0 and f"done\t{photos}/{photos}" in shown.stdout
    rows = _lines(runner.invoke(cli, ["jobs", "results", status["id"]]).stdout)
    assert [row["item"] for row in rows] == list(range(photos))
    listed = runner.invoke(cli, ["jobs", "list"])
    assert status["id"] in listed.stdout
    over = runner.invoke(cli, ["jobs", "cancel", status["id"]])
    assert over.exit_code == 2 and "job_finished" in over.stderr

    scored = _lines(
        runner.invoke(
            cli, ["predict", str(next((folder / "ai").iterdir())), "--url", service, "--json"]
        ).stdout
    )[0]
    first = runner.invoke(cli, ["feedback", "send", str(scored["prediction_id"]), "ai"])
    again = runner.invoke(cli, ["feedback", "send", str(scored["prediction_id"]), "ai"])
    assert first.exit_code == 0 and "\trecorded\t" in first.stdout, first.output
    assert "already recorded" in again.stdout

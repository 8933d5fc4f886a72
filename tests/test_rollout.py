"""Shadow traffic, canary routing and the guard that rolls a broken challenger back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from ai_photo_detector.persistence.schema import Alert, RegistryEvent
from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.settings import Settings
from conftest import broken_copy


def _settings(
    champion: Path, tmp_path: Path, max_disagreement: float = 0.3, **rollout: object
) -> Settings:
    return Settings(  # type: ignore[arg-type]
        model=str(champion),
        database_url=f"sqlite:///{tmp_path / 'rollout.db'}",
        prediction_log={"flush_interval_s": 0.05},
        rate_limit={"enabled": False},
        rollout={"guard": {"min_requests": 10, "max_disagreement": max_disagreement}, **rollout},
    )


def _images(tiny_dataset: Path) -> list[bytes]:
    return [
        p.read_bytes() for label in ("real", "ai") for p in sorted((tiny_dataset / label).iterdir())
    ]


def _wait(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        time.sleep(0.05)


def test_shadow_mirrors_every_request_without_changing_answers(
    bundle_dir: Path, second_bundle: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    settings = _settings(bundle_dir, tmp_path, challenger=str(second_bundle), shadow_fraction=1.0)
    with TestClient(create_app(settings)) as client:
        images = _images(tiny_dataset)[:20]
        answers = [client.post("/v1/predict", content=data).json() for data in images]
        assert {a["model"]["version"] for a in answers} == {"test"}  # the champion answers
        _wait(lambda: client.get("/v1/rollout").json()["shadow"]["mirrored"] == 20)
        status = client.get("/v1/rollout").json()
        assert status["challenger"]["version"] == "test2"
        assert status["challenger_stats"]["pairs"] == 20
        for answer in answers[:5]:
            client.post(
                "/v1/feedback", json={"prediction_id": answer["prediction_id"], "label": "real"}
            )
        report = client.get("/v1/shadow").json()["pairs"]
        [pair] = report
        assert pair["primary"]["version"] == "test" and pair["shadow"]["version"] == "test2"
        assert pair["pairs"] == 20 and 0 <= pair["disagreement"] <= 1
        assert pair["reviewed"] == 5
        assert pair["primary_accuracy"] is not None and pair["shadow_accuracy"] is not None
        from typer.testing import CliRunner

        from ai_photo_detector.cli import app as cli

        cli_report = CliRunner().invoke(
            cli, ["models", "shadow-report"], env={"APD_DATABASE_URL": settings.database_url}
        )
        assert cli_report.exit_code == 0 and "test2" in cli_report.stdout
        metrics = client.get("/metrics").text
        assert "apd_shadow_pairs_total" in metrics and "apd_shadow_disagreement" in metrics
        # shadow rows do not count as client predictions
        counted = [
            line for line in metrics.splitlines() if line.startswith("apd_predictions_total")
        ]
        assert counted and not any('version="test2"' in line for line in counted)


def test_canary_is_weighted_and_sticky(
    bundle_dir: Path, second_bundle: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    settings = _settings(
        bundle_dir, tmp_path, 1.0, challenger=str(second_bundle), canary_weight=0.5
    )
    with TestClient(create_app(settings)) as client:
        data = _images(tiny_dataset)[0]
        versions = {}
        for i in range(40):
            answer = client.post(
                "/v1/predict", content=data, headers={"X-Canary-Key": f"seller-{i}"}
            )
            versions[i] = answer.json()["model"]["version"]
        assert 8 <= list(versions.values()).count("test2") <= 32
        for i in range(5):  # the same caller always lands on the same side
            again = client.post(
                "/v1/predict", content=data, headers={"X-Canary-Key": f"seller-{i}"}
            )
            assert again.json()["model"]["version"] == versions[i]


def test_broken_challenger_trips_the_guard_and_is_rolled_back(
    bundle_dir: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    broken = broken_copy(bundle_dir, tmp_path / "broken")
    settings = _settings(bundle_dir, tmp_path)
    headers = {"X-Canary-Key": "everyone"}
    with TestClient(create_app(settings)) as client:
        update = client.post(
            "/v1/admin/rollout", json={"challenger": str(broken), "canary_weight": 1.0}
        )
        assert update.status_code == 200, update.text
        assert update.json()["challenger"]["version"] == "broken"
        real = [p.read_bytes() for p in sorted((tiny_dataset / "real").iterdir())]
        answered = []
        for data in real:
            answered.append(
                client.post("/v1/predict", content=data, headers=headers).json()["model"]["version"]
            )
            time.sleep(0.02)
        assert answered[0] == "broken"  # the canary really served the challenger
        _wait(lambda: client.get("/v1/rollout").json()["canary"]["tripped"] is not None)
        status = client.get("/v1/rollout").json()
        assert "disagreement" in status["canary"]["tripped"]
        assert status["canary"]["weight"] == 0.0
        after = client.post("/v1/predict", content=real[0], headers=headers).json()
        assert after["model"]["version"] == "test"  # back on the champion
        assert "apd_canary_rollbacks_total 1.0" in client.get("/metrics").text
        store = client.app.state.services.store  # type: ignore[attr-defined]

        def recorded() -> bool:
            with store.session() as session:
                return (
                    session.scalars(
                        select(Alert).where(Alert.name == "APDCanaryRolledBack")
                    ).first()
                    is not None
                )

        _wait(recorded)
        with store.session() as session:
            event = session.scalars(select(RegistryEvent)).one()
        assert event.action == "canary_rollback" and event.actor == "canary-guard"
        assert "disagreement" in event.reason


def test_admin_routes_need_the_admin_scope(bundle_dir: Path, tmp_path: Path) -> None:
    from ai_photo_detector.serving.keyring import hash_key

    settings = Settings(  # type: ignore[arg-type]
        model=str(bundle_dir),
        database_url=f"sqlite:///{tmp_path / 'rollout.db'}",
        environment="production",
        auth={
            "keys": [
                {"id": "shop", "sha256": hash_key("apd_shop_key_123456789"), "scopes": ["predict"]}
            ]
        },
    )
    with TestClient(create_app(settings)) as client:
        headers = {"X-API-Key": "apd_shop_key_123456789"}
        assert client.post("/v1/admin/reload", headers=headers).status_code == 403
        assert client.post("/v1/admin/rollout", json={}, headers=headers).status_code == 403
        assert client.get("/v1/rollout", headers=headers).status_code == 200


@pytest.mark.parametrize("damage", ["truncate", "manifest"])
def test_a_corrupted_bundle_never_replaces_a_healthy_one(
    bundle_dir: Path, tiny_dataset: Path, tmp_path: Path, damage: str
) -> None:
    import shutil

    served = tmp_path / "served"
    shutil.copytree(bundle_dir, served)
    with TestClient(create_app(_settings(served, tmp_path))) as client:
        data = _images(tiny_dataset)[0]
        assert client.post("/v1/predict", content=data).status_code == 200
        if damage == "truncate":
            model = served / "model.onnx"
            model.write_bytes(model.read_bytes()[:5000])
        else:
            (served / "manifest.json").write_text("{not json")
        response = client.post("/v1/admin/reload")
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "reload_failed"
        answer = client.post("/v1/predict", content=data)
        assert answer.status_code == 200 and answer.json()["model"]["version"] == "test"
        assert 'apd_model_reloads_total{outcome="failed"} 1.0' in client.get("/metrics").text


def test_explanations_answered_by_the_canary_are_watched_and_mirrored(
    bundle_dir: Path, second_bundle: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    """/v1/explain can be answered by the challenger: the guard counts it and the champion
    scores the same image beside it, as for /v1/predict."""
    settings = _settings(bundle_dir, tmp_path, challenger=str(second_bundle), canary_weight=1.0)
    with TestClient(create_app(settings)) as client:
        images = _images(tiny_dataset)[:6]
        answers = [client.post("/v1/explain?overlay=false", content=data).json() for data in images]
        assert {a["model"]["version"] for a in answers} == {"test2"}  # the canary answered
        _wait(lambda: client.get("/v1/rollout").json()["shadow"]["mirrored"] == 6)
        status = client.get("/v1/rollout").json()
        assert status["challenger_stats"]["requests"] == 6
        assert status["challenger_stats"]["pairs"] == 6


def test_requests_still_uploading_when_their_model_is_swapped_out_are_answered(
    bundle_dir: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    """The model is picked when a request arrives; a reload may retire it (its batcher stopped
    once the images it admitted are answered) while uploads are still being read. Those
    requests are scored by the model swapped in, never queued on the stopped one (where two
    at once used to wait forever)."""
    import asyncio

    import httpx

    data = _images(tiny_dataset)[0]
    app = create_app(_settings(bundle_dir, tmp_path))

    async def scenario() -> tuple[list[httpx.Response], bool]:
        go_on = asyncio.Event()
        uploading: list[asyncio.Event] = []

        async def slow_body():  # type: ignore[no-untyped-def]
            started = asyncio.Event()
            uploading.append(started)
            yield data[: len(data) // 2]
            started.set()
            await go_on.wait()
            yield data[len(data) // 2 :]

        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            models = app.state.services.models
            old = models.champion
            headers = {"Content-Length": str(len(data))}
            requests = [
                asyncio.create_task(
                    client.post("/v1/predict", content=slow_body(), headers=headers)
                )
                for _ in range(2)
            ]
            async with asyncio.timeout(10):
                while len(uploading) < 2 or not all(e.is_set() for e in uploading):
                    await asyncio.sleep(0.01)
            assert (await client.post("/v1/admin/reload")).status_code == 200
            async with asyncio.timeout(10):
                while not old.batcher.closed:  # retired: nothing was admitted on it
                    await asyncio.sleep(0.01)
            go_on.set()
            responses = await asyncio.wait_for(asyncio.gather(*requests), 10)
            return responses, models.champion is not old

    responses, swapped = asyncio.run(scenario())
    assert swapped
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    assert all(r.json()["model"]["version"] == "test" for r in responses)

"""The MLflow registry: register, promotion gate, rollback, audit; serving from aliases."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import broken_copy

pytest.importorskip("mlflow")

from ai_photo_detector.cli import app as cli
from ai_photo_detector.model.bundle import MANIFEST_FILE, BundleError, write_manifest
from ai_photo_detector.persistence.audit import audit_log
from ai_photo_detector.persistence.store import Store
from ai_photo_detector.registry.registry import Registry, resolve_bundle
from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.settings import Settings

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # MLflow artifacts and the bundle cache land here
    monkeypatch.setenv("APD_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("APD_DATABASE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setenv("APD_REGISTRY__CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def _worse_copy(bundle: Path, target: Path) -> Path:
    shutil.copytree(bundle, target)
    fields = json.loads((target / MANIFEST_FILE).read_text())
    fields["version"] = "worse"
    fields["metrics"]["roc_auc"] = fields["metrics"]["roc_auc"] - 0.2
    write_manifest(target, fields)
    return target


def _invoke(*args: str) -> str:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_register_promote_gate_rollback_and_audit(
    env: Path, bundle_dir: Path, second_bundle: Path
) -> None:
    first = _invoke("models", "register", str(bundle_dir), "--reason", "first model").strip()
    worse = _invoke("models", "register", str(_worse_copy(bundle_dir, env / "worse"))).strip()
    second = _invoke("models", "register", str(second_bundle)).strip()
    assert (first, worse, second) == ("1", "2", "3")
    _invoke("models", "promote", first, "--reason", "launch")

    refused = runner.invoke(cli, ["models", "promote", worse])
    assert refused.exit_code == 1 and "worse than champion" in refused.output
    no_reason = runner.invoke(cli, ["models", "promote", worse, "--force"])
    assert no_reason.exit_code == 1 and "needs a reason" in no_reason.output
    _invoke("models", "promote", worse, "--force", "--reason", "hotfix for a known issue")
    _invoke("models", "promote", second, "--alias", "challenger", "--reason", "try it")

    registry = Registry(Settings())
    assert registry.alias_version("champion") == "2"
    assert registry.alias_version("challenger") == "3"
    listing = _invoke("models", "list")
    assert "champion" in listing and "challenger" in listing

    _invoke("models", "rollback", "--reason", "worse in production")
    assert registry.alias_version("champion") == "1"
    no_more = runner.invoke(cli, ["models", "rollback"])
    assert no_more.exit_code == 1

    events = [json.loads(line) for line in _invoke("models", "audit").splitlines()]
    actions = [e["action"] for e in reversed(events)]
    assert actions == [
        "register",
        "register",
        "register",
        "promote",
        "promote",
        "promote",
        "rollback",
    ]
    forced = next(e for e in events if e["reason"] == "hotfix for a known issue")
    assert forced["details"]["forced"] is True and forced["previous"] == "1"
    assert all(e["actor"] for e in events)


def test_promotion_gate_with_data_evaluates_both(
    env: Path, bundle_dir: Path, tiny_dataset: Path
) -> None:
    _invoke("models", "register", str(bundle_dir))
    broken = broken_copy(bundle_dir, env / "broken")
    fields = json.loads((broken / MANIFEST_FILE).read_text())
    fields["dataset"]["fingerprint"] = "elsewhere"  # stored metrics can't be compared
    write_manifest(broken, fields)
    _invoke("models", "register", str(broken))
    _invoke("models", "promote", "1")
    refused = runner.invoke(cli, ["models", "promote", "2"])
    assert refused.exit_code == 1 and "different data" in refused.output
    evaluated = runner.invoke(cli, ["models", "promote", "2", "--data", str(tiny_dataset)])
    # same ranking of scores (only the threshold differs): equal AUC passes the gate
    assert evaluated.exit_code == 0, evaluated.output


def test_service_follows_aliases_and_reloads_under_load(
    env: Path, bundle_dir: Path, second_bundle: Path, tiny_dataset: Path
) -> None:
    registry = Registry(Settings(), Store(Settings().database_url))
    first = registry.register(bundle_dir)
    second = registry.register(second_bundle)
    registry.promote(first)
    settings = Settings(model="models:/ai-photo-detector@champion", rate_limit={"enabled": False})
    app = create_app(settings)
    data = sorted((tiny_dataset / "ai").iterdir())[0].read_bytes()

    async def scenario() -> tuple[list[int], set[str], dict[str, object]]:
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url="http://t")
        async with app.router.lifespan_context(app), client:
            first_answer = await client.post("/v1/predict", content=data)
            assert first_answer.json()["model"]["version"] == "test"
            registry.promote(second, force=True, reason="newer")  # the alias moves
            stop = asyncio.Event()
            statuses: list[int] = []
            versions: set[str] = set()

            async def load() -> None:
                while not stop.is_set():
                    response = await client.post("/v1/predict", content=data)
                    statuses.append(response.status_code)
                    versions.add(response.json()["model"]["version"])

            async def until(condition: Callable[[], bool]) -> None:
                async with asyncio.timeout(30):
                    while not condition():
                        await asyncio.sleep(0.01)

            workers = [asyncio.create_task(load()) for _ in range(4)]
            await until(lambda: len(statuses) >= 8)  # the load is running
            reloaded = (await client.post("/v1/admin/reload")).json()
            answered = len(statuses)
            await until(lambda: len(statuses) >= answered + 8)  # and goes on after the swap
            stop.set()
            await asyncio.gather(*workers)
            return statuses, versions, reloaded

    statuses, versions, reloaded = asyncio.run(scenario())
    assert statuses and all(status == 200 for status in statuses)  # no failed request
    assert versions == {"test", "test2"}
    assert reloaded == {
        "reloaded": {
            "champion": {
                "from": "test",
                "to": "test2",
                "from_registry": f"models:/ai-photo-detector/{first}",
                "to_registry": f"models:/ai-photo-detector/{second}",
            }
        }
    }
    cached = list((env / "cache" / "ai-photo-detector").glob(f"{second}-*/manifest.json"))
    assert len(cached) == 1


def test_two_registries_with_the_same_version_number_never_share_a_cache_entry(
    env: Path, bundle_dir: Path, second_bundle: Path
) -> None:
    """A staging and a production registry (or one re-created) both have a version 1: each
    must serve its own bundle, with one local cache between them."""
    staging = Settings(mlflow={"tracking_uri": f"sqlite:///{env / 'staging.db'}"})
    production = Settings(mlflow={"tracking_uri": f"sqlite:///{env / 'production.db'}"})
    assert Registry(staging).register(bundle_dir) == "1"
    assert Registry(production).register(second_bundle) == "1"
    assert Registry(staging).download("1").manifest.version == "test"
    assert Registry(production).download("1").manifest.version == "test2"
    assert Registry(staging).download("1").manifest.version == "test"  # from the cache


def test_models_and_rollout_show_which_registry_version_answers(
    env: Path, bundle_dir: Path
) -> None:
    registry = Registry(Settings(), Store(Settings().database_url))
    version = registry.register(bundle_dir)
    registry.promote(version)
    settings = Settings(model="models:/ai-photo-detector@champion")
    with TestClient(create_app(settings)) as client:
        [listed] = client.get("/v1/models").json()["models"]
        assert listed["reference"] == "models:/ai-photo-detector@champion"
        assert listed["registry_version"] == f"models:/ai-photo-detector/{version}"
        detail = client.get("/v1/models/ai-photo-detector").json()
        assert detail["registry_version"] == listed["registry_version"]
        champion = client.get("/v1/rollout").json()["champion"]
        assert champion["registry_version"] == listed["registry_version"]
    with TestClient(create_app(Settings(model=str(bundle_dir)))) as client:
        [listed] = client.get("/v1/models").json()["models"]
        assert listed["reference"] is None and listed["registry_version"] is None  # no path


def test_guard_removes_the_registry_challenger_alias(
    env: Path, bundle_dir: Path, tiny_dataset: Path
) -> None:
    store = Store(Settings().database_url)
    registry = Registry(Settings(), store)
    registry.promote(registry.register(bundle_dir))
    bad = registry.register(broken_copy(bundle_dir, env / "broken"))
    registry.promote(bad, "challenger")
    settings = Settings(
        model="models:/ai-photo-detector@champion",
        rate_limit={"enabled": False},
        rollout={
            "challenger": "models:/ai-photo-detector@challenger",
            "canary_weight": 1.0,
            "guard": {"min_requests": 8},
        },
    )
    with TestClient(create_app(settings)) as client:
        for path in sorted((tiny_dataset / "real").iterdir()):
            client.post("/v1/predict", content=path.read_bytes())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and registry.alias_version("challenger") is not None:
            time.sleep(0.1)
    assert registry.alias_version("challenger") is None
    assert registry.alias_version("champion") == "1"
    removal = next(e for e in audit_log(store) if e["action"] == "remove_alias")
    assert removal["actor"] == "canary-guard" and "disagreement" in removal["reason"]


def test_polling_follows_a_moved_alias(env: Path, bundle_dir: Path, second_bundle: Path) -> None:
    registry = Registry(Settings(), Store(Settings().database_url))
    first = registry.register(bundle_dir)
    second = registry.register(second_bundle)
    registry.promote(first)
    settings = Settings(
        model="models:/ai-photo-detector@champion", registry={"poll_interval_s": 0.2}
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/models").json()["models"][0]["version"] == "test"
        registry.promote(second, force=True, reason="newer")
        deadline = time.monotonic() + 20
        version = "test"
        while time.monotonic() < deadline and version == "test":
            time.sleep(0.2)
            version = client.get("/v1/models").json()["models"][0]["version"]
        assert version == "test2"


def test_end_to_end_register_shadow_canary_and_automatic_rollback(
    env: Path, bundle_dir: Path, second_bundle: Path, tiny_dataset: Path
) -> None:
    """Two trained models registered; champion served, challenger shadowed then canaried; a
    broken challenger takes its place and the guard rolls it back on its own."""
    store = Store(Settings().database_url)
    registry = Registry(Settings(), store)
    champion = registry.register(bundle_dir)
    challenger = registry.register(second_bundle)
    registry.promote(champion)
    registry.promote(challenger, "challenger")
    settings = Settings(
        model="models:/ai-photo-detector@champion",
        rate_limit={"enabled": False},
        prediction_log={"flush_interval_s": 0.05},
        rollout={
            "challenger": "models:/ai-photo-detector@challenger",
            "shadow_fraction": 1.0,
            "guard": {"min_requests": 8, "max_disagreement": 0.6},
        },
    )
    images = [p.read_bytes() for p in sorted((tiny_dataset / "real").iterdir())]
    with TestClient(create_app(settings)) as client:
        for data in images[:10]:  # shadow: the champion answers, the challenger is mirrored
            assert client.post("/v1/predict", content=data).json()["model"]["version"] == "test"
        deadline = time.monotonic() + 20
        while (
            time.monotonic() < deadline
            and client.get("/v1/rollout").json()["shadow"]["mirrored"] < 10
        ):
            time.sleep(0.05)
        assert client.get("/v1/shadow").json()["pairs"][0]["pairs"] == 10

        start = client.post(
            "/v1/admin/rollout", json={"canary_weight": 1.0, "shadow_fraction": 0.0}
        )
        assert start.json()["canary"]["weight"] == 1.0
        canary = client.post("/v1/predict", content=images[0], headers={"X-Canary-Key": "k"})
        assert canary.json()["model"]["version"] == "test2"

        broken = registry.register(broken_copy(bundle_dir, env / "broken"))
        registry.promote(broken, "challenger", reason="a bad build")
        assert client.post("/v1/admin/reload").json()["reloaded"]["challenger"]["to"] == "broken"
        client.post("/v1/admin/rollout", json={"canary_weight": 1.0})
        for i, data in enumerate(images):
            client.post("/v1/predict", content=data, headers={"X-Canary-Key": f"k{i}"})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and registry.alias_version("challenger") is not None:
            time.sleep(0.1)
        status = client.get("/v1/rollout").json()
        assert status["canary"]["tripped"] and status["canary"]["weight"] == 0.0
        after = client.post("/v1/predict", content=images[0], headers={"X-Canary-Key": "k1"})
        assert after.json()["model"]["version"] == "test"
    assert registry.alias_version("challenger") is None
    assert registry.alias_version("champion") == champion


def test_an_unreachable_registry_keeps_the_serving_model(
    env: Path, bundle_dir: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry stops answering under a running service (its client raises what a lost
    tracking server raises): a reload answers a clear error and keeps the loaded model, the
    alias poll fails, is logged and backs off, and the model keeps answering."""
    registry = Registry(Settings(), Store(Settings().database_url))
    registry.promote(registry.register(bundle_dir))
    settings = Settings(
        model="models:/ai-photo-detector@champion", registry={"poll_interval_s": 0.2}
    )
    photo = sorted((tiny_dataset / "ai").iterdir())[0].read_bytes()
    calls = {"n": 0}

    def unreachable(self: Registry, alias_or_version: str) -> str:
        calls["n"] += 1
        raise ConnectionError("the tracking server refused the connection")

    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/predict", content=photo).status_code == 200
        monkeypatch.setattr(Registry, "resolve", unreachable)
        reload = client.post("/v1/admin/reload")
        assert reload.status_code == 422 and reload.json()["error"]["code"] == "reload_failed"
        assert "previous model kept" in reload.json()["error"]["message"]
        time.sleep(2.0)  # poll rounds fail meanwhile, each waiting longer than the last
        polls = calls["n"] - 1
        assert 1 <= polls < 2.0 / 0.2, polls  # backed off: fewer than one try per interval
        assert client.post("/v1/predict", content=photo).status_code == 200
        assert client.get("/v1/models").json()["models"][0]["version"] == "test"
        assert 'apd_model_reloads_total{outcome="failed"} 1.0' in client.get("/metrics").text


def test_a_region_cut_off_from_the_registry_starts_on_its_last_resolved_bundle(
    env: Path, bundle_dir: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A region restarts while the shared registry cannot be reached: it serves the bundle the
    alias last resolved to (from its cache), instead of not starting; an alias the registry
    says does not exist is still an error."""
    registry = Registry(Settings(), Store(Settings().database_url))
    registry.promote(registry.register(bundle_dir))
    reference = "models:/ai-photo-detector@champion"
    assert resolve_bundle(reference, Settings()).registry_version == "models:/ai-photo-detector/1"

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with socket.socket() as probe:  # a port nothing listens on: the tracking server is gone
        probe.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{probe.getsockname()[1]}"
    cut_off = Settings(model=reference, mlflow={"tracking_uri": gone})
    resolved = resolve_bundle(reference, cut_off)
    assert resolved.registry_version == "models:/ai-photo-detector/1"
    assert resolved.bundle.manifest.version == "test"
    photo = sorted((tiny_dataset / "ai").iterdir())[0].read_bytes()
    with TestClient(create_app(cut_off)) as client:
        assert client.post("/v1/predict", content=photo).status_code == 200
    with pytest.raises(BundleError, match="no version with alias"):
        resolve_bundle("models:/ai-photo-detector@nonexistent", Settings())

from __future__ import annotations

import os
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).parent))

from ai_photo_detector.settings import Settings
from helpers import build_dataset

REPO = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = REPO / "models" / "default"
FAST_MODEL = REPO / "models" / "fast"  # the fine-tuned EfficientNet variant: one model file


def quick_settings(tmp: Path, **overrides: object) -> Settings:
    """Settings for a training run of a few seconds on the tiny synthetic dataset (the
    fine-tuned backbone unless ``training`` names another)."""
    base: dict[str, object] = {
        "imaging": {"input_size": 64},
        "training": {
            "backbone": "tf_efficientnet_lite0",
            "epochs": 4,  # fewer leave too few steps for a stable result at every thread count
            "batch_size": 16,
            "workers": 0,
            "learning_rate": 3e-3,
            "freeze_blocks": 3,
            "output_dir": str(tmp / "runs"),
            "drift_reference_size": 32,
        },
        "data": {"val_fraction": 0.25, "test_fraction": 0.25},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp / 'mlruns.db'}"},
        "gates": {"min_roc_auc": 0.6, "max_ece": 0.5, "max_robust_auc_drop": 0.5},
        "evaluation": {"batch_size": 16},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}  # type: ignore[dict-item]
        else:
            base[key] = value
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="session", autouse=True)
def embedded_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every app the tests start logs to a throw-away SQLite file, never to ./apd.db (and its
    job queue and spooled uploads go beside it)."""
    folder = tmp_path_factory.mktemp("store")
    url = f"sqlite:///{folder / 'apd.db'}"
    values = {
        "APD_DATABASE_URL": url,
        "APD_JOBS__QUEUE_URL": f"sqlite:///{folder / 'queue.db'}",
        "APD_JOBS__SPOOL_DIR": str(folder / "spool"),
        # No job worker process beside every test app; the job tests start theirs.
        "APD_JOBS__IN_PROCESS": "false",
    }
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    yield url
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("data") / "tiny", per_class=24)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path):  # type: ignore[no-untyped-def]
    """One real training run shared by the tests that need a bundle."""
    pytest.importorskip("torch")
    from ai_photo_detector.training.pipeline import run_training

    tmp = tmp_path_factory.mktemp("train")
    settings = quick_settings(tmp)
    return run_training([tiny_dataset], settings, version="test", log=lambda _: None)


@pytest.fixture(scope="session")
def bundle_dir(trained) -> Path:  # type: ignore[no-untyped-def]
    return Path(trained.bundle_dir)


@pytest.fixture(scope="session")
def two_sources(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two small datasets (two sources), so leave-one-source-out has something to leave out."""
    root = tmp_path_factory.mktemp("sources")
    return [
        build_dataset(root / "alpha", per_class=24, seed=0),
        build_dataset(root / "beta", per_class=24, seed=1),
    ]


@pytest.fixture(scope="session")
def frozen_trained(tmp_path_factory: pytest.TempPathFactory, two_sources: list[Path]):  # type: ignore[no-untyped-def]
    """The default recipe (frozen packaged CLIP encoder, logistic head) on two sources."""
    from ai_photo_detector.training.pipeline import run_training

    tmp = tmp_path_factory.mktemp("frozen")
    settings = quick_settings(
        tmp,
        training={"backbone": "clip_vit_b16", "feature_views": 1},
        mlflow={"enabled": False},
    )
    return run_training(two_sources, settings, version="frozen", log=lambda _: None)


@pytest.fixture(scope="session")
def frozen_bundle(frozen_trained) -> Path:  # type: ignore[no-untyped-def]
    return Path(frozen_trained.bundle_dir)


@pytest.fixture(scope="session")
def second_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """Another model of the same data (other seed, one epoch): a realistic challenger."""
    pytest.importorskip("torch")
    from ai_photo_detector.training.pipeline import run_training

    tmp = tmp_path_factory.mktemp("train2")
    settings = quick_settings(
        tmp,
        training={"seed": 1, "epochs": 1},
        mlflow={"enabled": False},
        evaluation={"robustness": ["jpeg75"]},
    )
    outcome = run_training([tiny_dataset], settings, version="test2", log=lambda _: None)
    return Path(outcome.bundle_dir)


def broken_copy(bundle: Path, target: Path, version: str = "broken") -> Path:
    """A bundle that always says 'ai': its threshold is 0 (checksums rewritten, so it loads)."""
    import json
    import shutil

    from ai_photo_detector.model.bundle import MANIFEST_FILE, write_manifest

    shutil.copytree(bundle, target)
    fields = json.loads((target / MANIFEST_FILE).read_text())
    fields["version"] = version
    fields["calibration"]["threshold"] = 0.0
    fields["calibration"]["bands"] = {"real_below": 0.0, "ai_from": 0.0}
    write_manifest(target, fields)
    return target


def _postgres_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    if not _postgres_up():
        pytest.skip("needs PostgreSQL on 127.0.0.1:5432")
    name = f"apd_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        "postgresql+psycopg://root@127.0.0.1:5432/test", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://root@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    with fresh_postgres() as url:
        yield url


@pytest.fixture
def browser() -> Iterator[object]:
    """A headless Chromium driven by selenium (the review and operations pages)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("needs chromium and chromedriver (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    session = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield session
    finally:
        session.quit()

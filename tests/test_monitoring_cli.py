from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ai_photo_detector.cli import app
from ai_photo_detector.monitoring.drift import DriftConfig, Sample, detect
from ai_photo_detector.persistence.drift_history import save_report
from ai_photo_detector.persistence.store import Store, tables

runner = CliRunner()


@pytest.fixture
def database_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("APD_DATABASE_URL", url)
    return url


def test_db_upgrade_and_downgrade(database_env: str) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    store = Store(database_env, migrate=False)
    assert "predictions" in tables(store.engine)
    assert runner.invoke(app, ["db", "downgrade", "base"]).exit_code == 0
    assert "predictions" not in tables(store.engine)
    store.close()


def _reports(url: str) -> None:
    rng = np.random.default_rng(0)

    def sample(shift: float) -> Sample:
        n = 200
        return Sample(
            np.clip(rng.beta(2, 2, n) + shift, 0, 1),
            ["ai" if rng.random() < 0.5 else "real" for _ in range(n)],
            {"brightness": rng.normal(0.5 + shift, 0.1, n)},
            rng.normal(size=(n, 8)).astype(np.float32),
        )

    store = Store(url)
    reference = sample(0)
    for shift in (0.0, 0.0, 0.3):
        report = detect(reference, sample(shift), DriftConfig(permutations=50))
        save_report(store, "detector", "1", "count:200", report)
    store.close()


@pytest.mark.parametrize("suffix", [".html", ".md"])
def test_drift_report_with_plots(database_env: str, tmp_path: Path, suffix: str) -> None:
    _reports(database_env)
    out = tmp_path / f"drift{suffix}"
    result = runner.invoke(app, ["drift", "report", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "3 checks, 1 with drift." in text
    assert text.count("critical") + text.count("warning") >= 1
    if suffix == ".html":
        assert "data:image/png;base64," in text
    else:
        assert out.with_suffix(".png").stat().st_size > 1000

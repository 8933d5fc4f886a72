from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from ai_photo_detector.settings import Settings, load_settings


def _fields_without_description(model: type[BaseModel], prefix: str = "") -> list[str]:
    missing = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        if not field.description:
            missing.append(path)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            missing += _fields_without_description(annotation, path + ".")
    return missing


def test_every_setting_has_a_description() -> None:
    assert _fields_without_description(Settings) == []


def test_environment_overrides_nested_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APD_TRAINING__EPOCHS", "3")
    monkeypatch.setenv("APD_MODEL", "/some/bundle")
    settings = Settings()
    assert settings.training.epochs == 3
    assert settings.model == "/some/bundle"


def test_yaml_file_is_read_and_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("training:\n  epochs: 5\n  batch_size: 7\ncalibration:\n  target_fpr: 0.1\n")
    monkeypatch.setenv("APD_TRAINING__BATCH_SIZE", "9")
    settings = load_settings(config)
    assert settings.training.epochs == 5
    assert settings.training.batch_size == 9
    assert settings.calibration.target_fpr == 0.1


def test_unknown_setting_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("training:\n  epoks: 5\n")
    with pytest.raises(ValueError):
        load_settings(config)


def test_default_model_is_the_shipped_bundle() -> None:
    assert Path(Settings().model).resolve() == (
        Path(__file__).resolve().parents[1] / "models" / "default"
    )


def test_the_short_tracking_uri_variable_beats_the_yaml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("mlflow:\n  tracking_uri: sqlite:///from-yaml.db\n  experiment: from-yaml\n")
    monkeypatch.setenv("APD_MLFLOW_TRACKING_URI", "sqlite:///from-env.db")
    settings = load_settings(config)
    assert settings.mlflow.tracking_uri == "sqlite:///from-env.db"
    assert settings.mlflow.experiment == "from-yaml"  # the rest of the section still merges
    explicit = load_settings(config, mlflow={"tracking_uri": "sqlite:///explicit.db"})
    assert explicit.mlflow.tracking_uri == "sqlite:///explicit.db"  # arguments beat both


def test_loading_a_file_leaves_the_environment_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.delenv("APD_CONFIG", raising=False)
    config = tmp_path / "config.yaml"
    config.write_text("training:\n  epochs: 5\n")
    before = dict(os.environ)
    assert load_settings(config).training.epochs == 5
    assert dict(os.environ) == before
    assert Settings().training.epochs != 5  # nothing of the file leaks into later settings


def test_settings_cannot_change_after_loading() -> None:
    from pydantic import ValidationError

    settings = Settings()
    with pytest.raises(ValidationError):
        settings.model = "elsewhere"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.server.port = 1  # type: ignore[misc]

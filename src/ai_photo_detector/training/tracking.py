"""MLflow tracking of a training run: parameters, per-epoch metrics, reports and the bundle."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ai_photo_detector.settings import Settings
from ai_photo_detector.training.backbones import FitHistory


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value


def log_run(
    settings: Settings,
    name: str,
    version: str,
    history: FitHistory,
    report: dict[str, Any],
    bundle_dir: Path,
    report_files: list[Path],
) -> str:
    """Log everything about one run; returns the MLflow run id."""
    import mlflow  # imported here: slow to import and only needed at the end of training

    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    mlflow.set_experiment(settings.mlflow.experiment)
    params: dict[str, Any] = {}
    _flatten("", settings.training.model_dump(mode="json"), params)
    _flatten("calibration", settings.calibration.model_dump(mode="json"), params)
    params["input_size"] = settings.imaging.input_size
    with mlflow.start_run(run_name=f"{name}-{version}") as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.set_tags({"bundle.name": name, "bundle.version": version})
        for epoch in history.epochs:
            mlflow.log_metrics(
                {key: float(value) for key, value in epoch.items() if key != "epoch"},
                step=int(epoch["epoch"]),
            )
        mlflow.log_metric("best_val_auc", history.best_val_auc)
        final = {
            f"test_{k}": float(v)
            for k, v in report["overall"].items()
            if isinstance(v, int | float) and not math.isnan(float(v))
        }
        for row in report["robustness"]:
            if not math.isnan(row["roc_auc"]):
                final[f"test_roc_auc_{row['condition']}"] = row["roc_auc"]
        for row in report.get("sources", {}).get("rows", []):
            if not math.isnan(row["roc_auc"]):
                source = re.sub(r"[^A-Za-z0-9_.\-/ ]", "_", row["source"])  # MLflow's alphabet
                final[f"loso_roc_auc_{source}"] = row["roc_auc"]
        mlflow.log_metrics(final)
        for path in report_files:
            mlflow.log_artifact(str(path), artifact_path="evaluation")
        mlflow.log_artifacts(str(bundle_dir), artifact_path="bundle")
        return str(run.info.run_id)

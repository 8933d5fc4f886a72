"""Reviewer feedback: record verdicts, measure live accuracy, export a retraining dataset."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import IntegrityError

from ai_photo_detector.persistence.schema import Feedback, Prediction
from ai_photo_detector.persistence.store import Store


class PredictionNotFound(LookupError):
    pass


@dataclass
class FeedbackResult:
    created: bool
    updated: bool
    predicted_label: str
    model_name: str
    model_version: str


def record_feedback(store: Store, prediction_id: str, label: str, source: str) -> FeedbackResult:
    """Insert or update the verdict of ``source`` on a prediction: idempotent per pair.

    Two verdicts on the same pair at once both find no row and both insert; the unique key
    refuses the later one, which is then tried again and finds the row (a soak once turned
    that race into a 500)."""
    try:
        return _record_feedback(store, prediction_id, label, source)
    except IntegrityError:
        return _record_feedback(store, prediction_id, label, source)


def _record_feedback(store: Store, prediction_id: str, label: str, source: str) -> FeedbackResult:
    with store.session() as session, session.begin():
        prediction = session.get(Prediction, prediction_id)
        if prediction is None:
            raise PredictionNotFound(prediction_id)
        existing = session.scalars(
            select(Feedback).where(
                Feedback.prediction_id == prediction_id, Feedback.source == source
            )
        ).first()
        created = updated = False
        if existing is None:
            session.add(
                Feedback(
                    prediction_id=prediction_id,
                    label=label,
                    source=source,
                    created_at=datetime.now(UTC),
                )
            )
            created = True
        elif existing.label != label:
            existing.label = label  # a reviewer may correct their own verdict
            existing.created_at = datetime.now(UTC)
            updated = True
        return FeedbackResult(
            created, updated, prediction.own_label, prediction.model_name, prediction.model_version
        )


@dataclass
class LiveAccuracy:
    model_name: str
    model_version: str
    count: int
    accuracy: float
    precision: float
    recall: float
    labels: list[str] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)  # rows: reviewed, cols: predicted


@dataclass(frozen=True)
class Reviewed:
    """A reviewed prediction: what its model said and the latest verdict on it."""

    prediction_id: str
    created_at: datetime
    model_name: str
    model_version: str
    predicted: str
    reviewed: str


def latest_verdicts(store: Store, *conditions: ColumnElement[bool]) -> list[Reviewed]:
    """Reviewed predictions matching ``conditions``, each with its latest verdict."""
    query = (
        select(
            Prediction.id,
            Prediction.created_at,
            Prediction.model_name,
            Prediction.model_version,
            Prediction.own_label,
            Feedback.label,
        )
        .join(Feedback, Feedback.prediction_id == Prediction.id)
        .where(*conditions)
        .order_by(Feedback.created_at, Feedback.id)
    )
    latest: dict[str, Reviewed] = {}
    with store.session() as session:
        for row in session.execute(query):
            latest[row[0]] = Reviewed(*row)
    return list(latest.values())


def live_accuracy(store: Store, since: datetime, ai_label: str) -> list[LiveAccuracy]:
    """Accuracy, precision and recall (AI positive) per model version from reviewed predictions."""
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for found in latest_verdicts(store, Feedback.created_at >= since):
        groups.setdefault((found.model_name, found.model_version), []).append(
            (found.predicted, found.reviewed)
        )
    results = []
    for (model, version), pairs in sorted(groups.items()):
        labels = sorted({label for pair in pairs for label in pair})
        index = {label: i for i, label in enumerate(labels)}
        confusion = [[0] * len(labels) for _ in labels]
        for predicted, reviewed in pairs:
            confusion[index[reviewed]][index[predicted]] += 1
        tp = sum(p == ai_label and r == ai_label for p, r in pairs)
        called_ai = sum(p == ai_label for p, _ in pairs)
        really_ai = sum(r == ai_label for _, r in pairs)
        results.append(
            LiveAccuracy(
                model_name=model,
                model_version=version,
                count=len(pairs),
                accuracy=sum(p == r for p, r in pairs) / len(pairs),
                precision=tp / called_ai if called_ai else float("nan"),
                recall=tp / really_ai if really_ai else float("nan"),
                labels=labels,
                confusion=confusion,
            )
        )
    return results


def export_dataset(
    store: Store, out_dir: Path, since: datetime, more: Sequence[Store] = ()
) -> dict[str, Any]:
    """Reviewed predictions as a training dataset: images in label folders where stored, and
    always a manifest CSV (path, label, source, sha256) that ``train --data`` reads.

    ``more``: the stores of other regions, each holding the verdicts on its own predictions
    (their ids differ, so nothing is counted twice)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    query = (
        select(Prediction.id, Prediction.image_sha256, Prediction.image_path, Feedback.label)
        .join(Feedback, Feedback.prediction_id == Prediction.id)
        .where(Feedback.created_at >= since)
        .order_by(Feedback.created_at)
    )
    latest: dict[str, tuple[str, str | None, str]] = {}
    for each in (store, *more):
        with each.session() as session:
            for prediction_id, sha256, image_path, label in session.execute(query):
                latest[prediction_id] = (sha256, image_path, label)
    copied = missing = 0
    manifest = out_dir / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "source", "sha256"])
        for sha256, image_path, label in latest.values():
            if image_path and Path(image_path).is_file():
                target = out_dir / label / Path(image_path).name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(image_path, target)
                writer.writerow([f"{label}/{target.name}", label, "feedback", sha256])
                copied += 1
            else:
                missing += 1
    unstored = out_dir / "unstored.csv"
    with unstored.open("w", newline="") as handle:  # reviewed, but the image was not kept
        writer = csv.writer(handle)
        writer.writerow(["sha256", "label"])
        for sha256, image_path, label in latest.values():
            if not (image_path and Path(image_path).is_file()):
                writer.writerow([sha256, label])
    return {"reviewed": len(latest), "images_copied": copied, "images_not_stored": missing}

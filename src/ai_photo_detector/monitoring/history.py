"""Drift windows read from the prediction log, and drift reports kept in the store."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select

from ai_photo_detector.bundle import Bundle
from ai_photo_detector.image_stats import STAT_NAMES, STATS_BASIS
from ai_photo_detector.monitoring.drift import Sample
from ai_photo_detector.monitoring.schema import DriftReport, Prediction
from ai_photo_detector.monitoring.store import Store

logger = logging.getLogger(__name__)


def reference_sample(bundle: Bundle) -> Sample:
    ref = bundle.manifest.drift_reference
    image_stats = {
        name: np.asarray(values, dtype=np.float64) for name, values in ref.image_stats.items()
    }
    if ref.image_stats_basis != STATS_BASIS:
        # Measured at another scale: comparing would raise false alarms. Re-measure with
        # `ai-photo-detector recalibrate RUN_DIR`.
        logger.warning(
            "bundle %s %s: its reference image statistics were measured on %r, live ones on "
            "%r; image-statistics drift is not tested for it",
            bundle.manifest.name,
            bundle.manifest.version,
            ref.image_stats_basis,
            STATS_BASIS,
        )
        image_stats = {}
    return Sample(
        np.asarray(ref.scores, dtype=np.float64),
        list(ref.labels),
        image_stats,
        bundle.embedding_reference(),
    )


def load_window(
    store: Store,
    model_name: str,
    model_version: str,
    *,
    count: int | None = None,
    since: datetime | None = None,
    limit: int = 5000,
) -> Sample:
    """The latest ``count`` primary predictions, or those since ``since`` (at most ``limit``)."""
    columns = [getattr(Prediction, name) for name in STAT_NAMES]
    query = (
        select(Prediction.score, Prediction.label, Prediction.embedding, *columns)
        .where(
            Prediction.model_name == model_name,
            Prediction.model_version == model_version,
            Prediction.route == "primary",
        )
        .order_by(Prediction.created_at.desc())
        .limit(count if count is not None else limit)
    )
    if since is not None:
        query = query.where(Prediction.created_at >= since)
    with store.session() as session:
        rows = session.execute(query).all()
    if not rows:
        return Sample(
            np.zeros(0), [], {n: np.zeros(0) for n in STAT_NAMES}, np.zeros((0, 0), np.float32)
        )
    return Sample(
        np.asarray([r[0] for r in rows], dtype=np.float64),
        [r[1] for r in rows],
        {
            name: np.asarray([r[3 + i] for r in rows], dtype=np.float64)
            for i, name in enumerate(STAT_NAMES)
        },
        np.stack([np.frombuffer(r[2], dtype="<f2").astype(np.float32) for r in rows]),
    )


def save_report(
    store: Store, model_name: str, model_version: str, window: str, report: dict[str, Any]
) -> int:
    with store.session() as session, session.begin():
        row = DriftReport(
            created_at=datetime.now(UTC),
            model_name=model_name,
            model_version=model_version,
            window=window,
            size=int(report["window_size"]),
            drift=bool(report["drift"]),
            severity=str(report["severity"]),
            report=report,
        )
        session.add(row)
        session.flush()
        return int(row.id)


def report_dict(row: DriftReport) -> dict[str, Any]:
    return {
        "id": row.id,
        "created_at": row.created_at.isoformat(),
        "model": {"name": row.model_name, "version": row.model_version},
        "window": row.window,
        "size": row.size,
        "drift": row.drift,
        "severity": row.severity,
        "report": row.report,
    }


def history(
    store: Store, model_name: str | None, limit: int = 50, hours: float | None = None
) -> list[dict[str, Any]]:
    query = select(DriftReport).order_by(DriftReport.created_at.desc(), DriftReport.id.desc())
    if model_name:
        query = query.where(DriftReport.model_name == model_name)
    if hours is not None:
        query = query.where(DriftReport.created_at >= datetime.now(UTC) - timedelta(hours=hours))
    with store.session() as session:
        return [report_dict(row) for row in session.scalars(query.limit(limit))]

"""What drift detection compares: a bundle's reference sample and windows of the prediction
log, both as the detectors' :class:`~ai_photo_detector.monitoring.drift.Sample`."""

from __future__ import annotations

import logging
from datetime import datetime

import numpy as np
from sqlalchemy import select

from ai_photo_detector.image_stats import STAT_NAMES, STATS_BASIS
from ai_photo_detector.model.bundle import Bundle
from ai_photo_detector.monitoring.drift import Sample
from ai_photo_detector.persistence.schema import Prediction
from ai_photo_detector.persistence.store import Store

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

"""Shadow comparison from the store: champion and challenger on the very same images."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import aliased

from ai_photo_detector.persistence.schema import Feedback, Prediction
from ai_photo_detector.persistence.store import Store


def shadow_report(store: Store, since: datetime) -> list[dict[str, Any]]:
    """Per (answering model, mirrored model) pair: disagreement, score correlation and, where
    reviewers gave a verdict, both models' accuracy on the same images."""
    primary, shadow = aliased(Prediction), aliased(Prediction)
    query = (
        select(
            primary.model_name,
            primary.model_version,
            shadow.model_name,
            shadow.model_version,
            primary.own_label,
            shadow.own_label,
            primary.score,
            shadow.score,
            primary.id,
        )
        .join(shadow, shadow.paired_id == primary.id)
        .where(shadow.route == "shadow", primary.created_at >= since)
    )
    feedback_query = select(Feedback.prediction_id, Feedback.label).order_by(Feedback.created_at)
    with store.session() as session:
        rows = session.execute(query).all()
        ids = {row[8] for row in rows}
        verdicts = {pid: label for pid, label in session.execute(feedback_query) if pid in ids}
    groups: dict[tuple[str, str, str, str], list[Any]] = {}
    for row in rows:
        groups.setdefault((row[0], row[1], row[2], row[3]), []).append(row)
    report = []
    for (p_name, p_version, s_name, s_version), items in sorted(groups.items()):
        primary_scores = np.asarray([r[6] for r in items])
        shadow_scores = np.asarray([r[7] for r in items])
        reviewed = [r for r in items if r[8] in verdicts]
        correlation = (
            float(np.corrcoef(primary_scores, shadow_scores)[0, 1])
            if len(items) > 2 and primary_scores.std() > 0 and shadow_scores.std() > 0
            else None
        )
        report.append(
            {
                "primary": {"name": p_name, "version": p_version},
                "shadow": {"name": s_name, "version": s_version},
                "pairs": len(items),
                "disagreement": float(np.mean([r[4] != r[5] for r in items])),
                "score_correlation": correlation,
                "mean_score_difference": float(np.mean(shadow_scores - primary_scores)),
                "reviewed": len(reviewed),
                "primary_accuracy": float(np.mean([r[4] == verdicts[r[8]] for r in reviewed]))
                if reviewed
                else None,
                "shadow_accuracy": float(np.mean([r[5] == verdicts[r[8]] for r in reviewed]))
                if reviewed
                else None,
            }
        )
    return report

"""Drift reports kept in the store: one row per window and check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from ai_photo_detector.persistence.schema import DriftReport
from ai_photo_detector.persistence.store import Store


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

"""The audit log of model changes: registry actions and the canary guard's rollbacks."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from ai_photo_detector.persistence.schema import RegistryEvent
from ai_photo_detector.persistence.store import Store


def record_event(
    store: Store,
    *,
    action: str,
    model_name: str,
    version: str,
    alias: str,
    previous: str | None,
    actor: str | None,
    reason: str,
    details: dict[str, Any],
) -> None:
    with store.session() as session, session.begin():
        session.add(
            RegistryEvent(
                created_at=datetime.now(UTC),
                action=action,
                model_name=model_name,
                version=version,
                alias=alias,
                previous_version=previous,
                actor=actor or getpass.getuser(),
                reason=reason[:1000],
                details=details,
            )
        )


def audit_log(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` events, newest first."""
    query = select(RegistryEvent).order_by(RegistryEvent.id.desc()).limit(limit)
    with store.session() as session:
        return [
            {
                "at": e.created_at.isoformat(),
                "action": e.action,
                "model": e.model_name,
                "version": e.version,
                "alias": e.alias,
                "previous": e.previous_version,
                "actor": e.actor,
                "reason": e.reason,
                "details": e.details,
            }
            for e in session.scalars(query)
        ]


def last_event_at(store: Store, action: str, model_name: str) -> datetime | None:
    """When ``action`` was last recorded for ``model_name`` (in UTC), if ever."""
    query = (
        select(RegistryEvent.created_at)
        .where(RegistryEvent.action == action, RegistryEvent.model_name == model_name)
        .order_by(RegistryEvent.id.desc())
        .limit(1)
    )
    with store.session() as session:
        found = session.scalar(query)
    if found is not None and found.tzinfo is None:
        found = found.replace(tzinfo=UTC)  # SQLite keeps no zone; it was written in UTC
    return found

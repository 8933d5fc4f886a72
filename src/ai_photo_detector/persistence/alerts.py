"""Alerts kept in the store: those Alertmanager posts, and those the service raises itself."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ai_photo_detector.persistence.schema import Alert
from ai_photo_detector.persistence.store import Store


@dataclass(frozen=True)
class AlertRecord:
    name: str
    status: str  # firing or resolved
    severity: str
    starts_at: str  # as the sender wrote it (ISO 8601)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""  # Alertmanager's; derived from name, labels and start when empty


def record_alerts(store: Store, alerts: list[AlertRecord]) -> int:
    """Write alerts in one transaction; returns how many."""
    now = datetime.now(UTC)
    with store.session() as session, session.begin():
        for alert in alerts:
            fingerprint = (
                alert.fingerprint
                or hashlib.sha256(
                    f"{alert.name}{sorted(alert.labels.items())}{alert.starts_at}".encode()
                ).hexdigest()[:16]
            )
            session.add(
                Alert(
                    received_at=now,
                    status=alert.status[:16],
                    name=alert.name[:128],
                    severity=alert.severity[:32],
                    fingerprint=fingerprint,
                    starts_at=alert.starts_at,
                    labels=alert.labels,
                    annotations=alert.annotations,
                )
            )
    return len(alerts)

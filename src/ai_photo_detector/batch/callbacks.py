"""Job webhooks: a callback URL checked at submission, then one signed event when the job is
over, sent by the service until the receiver takes it (2xx) or ``give_up_after_s`` passes.

Every attempt is recorded (see ``persistence/callbacks.py``) and shown in the job's status.
Receivers verify the signature with ``ai_photo_detector.client.verify_signature``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import httpx

from ai_photo_detector.batch.callback_targets import check_target, refused
from ai_photo_detector.contract.schemas import JobEvent, JobStatus
from ai_photo_detector.contract.signatures import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    signature_header,
)
from ai_photo_detector.errors import InputError
from ai_photo_detector.persistence.callbacks import Attempt, CallbackStore
from ai_photo_detector.persistence.jobs import aware, now
from ai_photo_detector.persistence.schema import Job
from ai_photo_detector.settings import ApiKeyEntry, WebhookSettings

logger = logging.getLogger(__name__)
DUE_PER_ROUND = 20


SecretFor = Callable[[str], str | None]


def secret_lookup(
    settings: WebhookSettings, entry_of: Callable[[str], ApiKeyEntry | None]
) -> SecretFor:
    """A key id's signing secret, looked up when it is needed (keys rotate while serving):
    its own, else the service-wide one; anonymous callers ("") get the service-wide one."""

    def secret_for(owner: str) -> str | None:
        if not owner:
            return settings.secret
        entry = entry_of(owner)
        if entry is None:
            return None
        return entry.webhook_secret or settings.secret

    return secret_for


def event_of(job: Job, status: JobStatus) -> JobEvent:
    finished = aware(job.finished_at)
    return JobEvent(
        id=f"{job.id}.{job.status}",
        type=f"job.{job.status}",
        created_at=finished.isoformat() if finished else "",
        job=status,
    )


class Webhooks:
    def __init__(
        self,
        store: CallbackStore,
        settings: WebhookSettings,
        secret_for: SecretFor,
    ) -> None:
        self.store = store
        self.settings = settings
        self.secret_for = secret_for

    def accept(self, url: str, owner: str) -> str:
        """The callback URL a job may carry, or ``InputError`` (callback_refused)."""
        if not self.settings.enabled:
            raise refused("webhooks are turned off on this server (webhooks.enabled)")
        if self.secret_for(owner) is None:
            raise refused(
                "no webhook secret is configured for this API key (auth.keys[].webhook_secret "
                "or webhooks.secret): an unsigned event could not be trusted"
            )
        check_target(url, self.settings)
        return url

    def deliver_due(self, status_of: Callable[[Job], JobStatus]) -> int:
        """Try every event that is due once; returns how many were delivered."""
        delivered = 0
        lease_s = self.settings.timeout_s + 5
        for job in self.store.due(DUE_PER_ROUND):
            if self.store.claim(job.id, lease_s):
                delivered += self._attempt(job, status_of(job))
        return delivered

    def _attempt(self, job: Job, status: JobStatus) -> bool:
        number = len(status.callback.attempts) + 1 if status.callback else 1
        event = event_of(job, status)
        started_at = now()
        started = time.perf_counter()
        status_code: int | None = None
        final_refusal = False
        try:
            status_code = self._post(job, event)
            error = None if 200 <= status_code < 300 else f"HTTP {status_code}"
        except InputError as exc:  # the target is refused now (its name moved, a secret went)
            error, final_refusal = exc.message, True
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        attempt = Attempt(
            number, started_at, status_code, error, (time.perf_counter() - started) * 1000
        )
        delivered = error is None
        retry_at = None if delivered or final_refusal else self._next_try(job, number)
        self.store.record(job.id, attempt, delivered, retry_at)
        if not delivered:
            logger.info("webhook of job %s, attempt %d: %s", job.id, number, error)
        return delivered

    def _post(self, job: Job, event: JobEvent) -> int:
        secret = self.secret_for(job.owner)
        if secret is None:
            raise refused("the key that submitted the job no longer has a webhook secret")
        assert job.callback_url is not None
        target = check_target(job.callback_url, self.settings)
        body = event.model_dump_json().encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "Host": target.host_header,
            "User-Agent": "ai-photo-detector-webhooks",
            SIGNATURE_HEADER: signature_header(secret, body),
            EVENT_HEADER: event.type,
            DELIVERY_HEADER: event.id,
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        with httpx.Client(timeout=self.settings.timeout_s, follow_redirects=False) as http:
            request = http.build_request(
                "POST", target.pinned_url(), content=body, headers=headers, extensions=extensions
            )
            return http.send(request).status_code

    def _next_try(self, job: Job, failures: int) -> datetime | None:
        settings = self.settings
        wait = min(settings.max_backoff_s, settings.backoff_s * 2 ** (failures - 1))
        moment = now() + timedelta(seconds=wait)
        finished = aware(job.finished_at) or now()
        if moment > finished + timedelta(seconds=settings.give_up_after_s):
            return None
        return moment

"""Requests that belong to another region: passed to it, or refused with a clear retry-later.

Predictions are answered by whichever region the global front picks, and each region logs its
own; a reviewer's verdict must land in the log of the region that made the prediction (the id
says which, see ``ids.py``). A region receiving feedback for another region's prediction sends
it there (its ``region.peers`` URL, with the caller's own credentials), and answers 503
``region_unavailable`` with Retry-After while that region cannot be reached: the verdict is
neither lost (the client is told to retry) nor stored in the wrong region.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

from ai_photo_detector.errors import NotInRegion, RegionUnavailable
from ai_photo_detector.ids import region_of
from ai_photo_detector.settings import RegionSettings

logger = logging.getLogger(__name__)
FORWARDED_HEADER = "X-APD-Forwarded-By"
# Credentials and request identity are passed on; nothing else of the caller's request is.
PASSED_HEADERS = ("authorization", "x-api-key", "x-request-id", "idempotency-key")


@dataclass(frozen=True)
class Relayed:
    status: int
    body: Any


class Peers:
    def __init__(self, settings: RegionSettings) -> None:
        self.settings = settings

    def owner(self, identifier: str) -> str | None:
        """The other region an id belongs to, or None when it is this region's (or untagged)."""
        region = region_of(identifier)
        if region is None or self.settings.name is None or region == self.settings.name:
            return None
        return region

    async def relay(
        self, region: str, method: str, path: str, json: Any, headers: dict[str, str]
    ) -> Relayed:
        """The other region's answer to the same request, as it gave it."""
        if headers.get(FORWARDED_HEADER.lower()):
            raise NotInRegion(f"region {self.settings.name} does not hold {path}'s record")
        url = self.settings.peers.get(region)
        if url is None:
            raise NotInRegion(
                f"the record belongs to region {region!r}, which this region does not know "
                "(region.peers)"
            )
        passed = {k: v for k, v in headers.items() if k.lower() in PASSED_HEADERS}
        passed[FORWARDED_HEADER] = self.settings.name or ""
        try:
            async with httpx.AsyncClient(timeout=self.settings.peer_timeout_s) as client:
                response = await client.request(
                    method, url.rstrip("/") + path, json=json, headers=passed
                )
        except httpx.HTTPError as exc:
            logger.warning("region %s cannot be reached: %s", region, exc)
            raise RegionUnavailable(
                f"the prediction belongs to region {region!r}, which cannot be reached; "
                "nothing was stored, try again later"
            ) from exc
        if response.status_code >= 500:
            raise RegionUnavailable(
                f"region {region!r} answered {response.status_code}; nothing was stored, "
                "try again later"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise RegionUnavailable(f"region {region!r} answered without JSON") from exc
        return Relayed(response.status_code, body)

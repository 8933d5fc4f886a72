"""Rate limits with the `limits` library: per API key, else per client address.

The client address is the socket peer unless that peer is a configured trusted proxy; only then
is X-Forwarded-For read, right to left, skipping trusted hops. Memory storage serves one
replica; Redis storage shares the counts between replicas.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from typing import Any

from fastapi import Request, Response
from limits import parse
from limits.aio import strategies
from limits.aio.storage import Storage
from limits.storage import storage_from_string

from ai_photo_detector.serving.api.errors import ApiError
from ai_photo_detector.serving.metrics import ServiceMetrics
from ai_photo_detector.settings import RateLimitSettings

logger = logging.getLogger(__name__)

_STRATEGIES: dict[str, Any] = {
    "fixed-window": strategies.FixedWindowRateLimiter,
    "moving-window": strategies.MovingWindowRateLimiter,
    "sliding-window-counter": strategies.SlidingWindowCounterRateLimiter,
}


def _async_uri(uri: str) -> str:
    return uri if uri.startswith("async+") else f"async+{uri}"


class RateLimiter:
    def __init__(self, settings: RateLimitSettings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.item = parse(settings.limit)
        options = (
            {} if settings.storage_uri.startswith("memory") else {"key_prefix": settings.key_prefix}
        )
        storage = storage_from_string(_async_uri(settings.storage_uri), **options)
        if not isinstance(storage, Storage):  # pragma: no cover - async+ URIs give async storage
            raise ValueError(f"not an async rate-limit storage: {settings.storage_uri}")
        self.storage = storage
        self.limiter = _STRATEGIES[settings.strategy](self.storage)
        # Where counts go while the shared storage is down (rate_limit.on_storage_error=local).
        self.local = _STRATEGIES[settings.strategy](storage_from_string("async+memory://"))
        self.shared_down_until = 0.0
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.proxies)

    def client_address(self, request: Request) -> str:
        peer = request.client.host if request.client else "unknown"
        if not self._trusted(peer):
            return peer
        hops = [
            h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()
        ]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop
        return peer

    def identity(self, request: Request, key_id: str | None) -> str:
        if key_id is not None:
            return f"key:{key_id}"
        return f"ip:{self.client_address(request)}"

    async def check(self, request: Request, response: Response, key_id: str | None) -> None:
        """Count a request of this API key (else this client address) against its limit."""
        if not self.settings.enabled:
            return
        identity = self.identity(request, key_id)
        allowed, stats = await self._count(identity)
        reset_in = max(0, math.ceil(stats.reset_time - time.time()))
        headers = {
            "X-RateLimit-Limit": str(self.item.amount),
            "X-RateLimit-Remaining": str(max(0, stats.remaining)),
            "X-RateLimit-Reset": str(reset_in),
        }
        if not allowed:
            self.metrics.rate_limited.inc()
            raise ApiError(
                429,
                "rate_limited",
                f"rate limit of {self.settings.limit} exceeded",
                {**headers, "Retry-After": str(max(1, reset_in))},
            )
        response.headers.update(headers)

    async def _count(self, identity: str) -> tuple[bool, Any]:
        """Hit the shared storage; when it fails, follow rate_limit.on_storage_error and leave
        it alone for storage_retry_s (a dead Redis must not cost every request a timeout)."""
        if time.monotonic() >= self.shared_down_until:
            try:
                allowed = await self.limiter.hit(self.item, identity)
                return allowed, await self.limiter.get_window_stats(self.item, identity)
            except Exception as exc:  # the storage's client raises its own error types
                self.shared_down_until = time.monotonic() + self.settings.storage_retry_s
                self.metrics.rate_limit_storage_errors.inc()
                logger.warning("rate-limit storage failed (%s): %s", type(exc).__name__, exc)
        if self.settings.on_storage_error == "refuse":
            retry = str(max(1, math.ceil(self.shared_down_until - time.monotonic())))
            raise ApiError(
                503,
                "rate_limit_unavailable",
                "the rate-limit storage cannot be reached",
                {"Retry-After": retry},
            )
        allowed = await self.local.hit(self.item, identity)
        return allowed, await self.local.get_window_stats(self.item, identity)

    async def reset(self) -> None:
        await self.storage.reset()

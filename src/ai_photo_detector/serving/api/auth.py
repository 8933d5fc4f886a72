"""API keys: hashed at rest, compared in constant time, with scopes per route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response

from ai_photo_detector.serving.api.deps import services_of
from ai_photo_detector.serving.api.errors import ApiError
from ai_photo_detector.serving.keyring import KeyRing


@dataclass(frozen=True)
class Principal:
    key_id: str | None  # None: an anonymous caller where auth is not required
    scopes: frozenset[str]


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    api_key = request.headers.get("x-api-key", "").strip()
    return api_key or None


def authenticate(keys: KeyRing, key: str | None) -> Principal | None:
    """The principal of a key, or None when no entry matches; an expired key is refused."""
    found = keys.match(key)
    if found is None:
        return None
    if found.expired:
        raise ApiError(
            401,
            "api_key_expired",
            f"the API key '{found.entry.id}' expired at {found.entry.expires_at}",
            {"WWW-Authenticate": "Bearer"},
        )
    return Principal(found.entry.id, frozenset(found.entry.scopes))


def require(scope: str | None) -> Callable[[Request, Response], Awaitable[Principal]]:
    """Dependency: the caller holds ``scope`` (any valid key for None; or the path is open),
    then rate limits apply."""

    async def dependency(request: Request, response: Response) -> Principal:
        services = services_of(request)
        settings = services.settings
        key = presented_key(request)
        principal = authenticate(services.keyring, key)
        if request.scope["path"] in settings.auth.open_paths:  # not request.url: no URL parse
            return principal or Principal(None, frozenset())  # health checks: no key, no limit
        limiter = request.app.state.rate_limiter
        if key is not None and principal is None:
            await limiter.check(request, response, None)  # guessing keys costs budget too
            raise ApiError(
                401, "invalid_api_key", "the API key is not valid", {"WWW-Authenticate": "Bearer"}
            )
        if principal is None:
            if settings.auth_required:
                await limiter.check(request, response, None)
                raise ApiError(
                    401,
                    "missing_api_key",
                    "an API key is required (Authorization: Bearer or X-API-Key)",
                    {"WWW-Authenticate": "Bearer"},
                )
            principal = Principal(None, frozenset())
        elif (
            scope is not None and scope not in principal.scopes and "admin" not in principal.scopes
        ):
            raise ApiError(403, "insufficient_scope", f"the API key lacks the '{scope}' scope")
        await limiter.check(request, response, principal.key_id)
        return principal

    return dependency


# The callers each route accepts; one definition each so every router means the same.
PredictCaller = Annotated[Principal, Depends(require("predict"))]
AdminCaller = Annotated[Principal, Depends(require("admin"))]
JobsCaller = Annotated[Principal, Depends(require("jobs"))]
ReviewCaller = Annotated[Principal, Depends(require("review"))]
OpsCaller = Annotated[Principal, Depends(require("ops"))]  # the read-only operations view
AnyKeyCaller = Annotated[Principal, Depends(require(None))]

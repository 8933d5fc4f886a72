"""Dependencies: how handlers reach app state (no module-level mutable state anywhere)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ai_photo_detector.serving.api.state import Services


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    # async on purpose: FastAPI runs a plain ``def`` dependency on a worker thread, two thread
    # hops on every request for an attribute read.
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]

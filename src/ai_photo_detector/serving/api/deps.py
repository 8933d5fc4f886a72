"""Dependencies: how handlers reach app state (no module-level mutable state anywhere)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ai_photo_detector.serving.api.state import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

"""The serve command: the HTTP API."""

from __future__ import annotations

from typing import Annotated

import typer

from ai_photo_detector.cli.common import (
    ConfigOption,
    load,
)


def serve(
    model: Annotated[str | None, typer.Option(help="Bundle folder (default: APD_MODEL).")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    config: ConfigOption = None,
) -> None:
    """Serve the HTTP API with the configured model."""
    from ai_photo_detector.serving.api.server import run_server

    settings = load(config)
    server = {"host": host or settings.server.host, "port": port or settings.server.port}
    run_server(
        settings.model_copy(
            update={
                "model": model or settings.model,
                "server": settings.server.model_copy(update=server),
            }
        )
    )

"""The keys command group: API keys."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ai_photo_detector.cli.common import (
    console,
)

app = typer.Typer(no_args_is_help=True, help="API keys.")


@app.command("create")
def keys_create(
    key_id: Annotated[str, typer.Option("--id", help="Key id, shown in logs.")],
    scopes: Annotated[
        list[str] | None, typer.Option("--scope", help="predict jobs review ops admin")
    ] = None,
) -> None:
    """Make a new API key: print it once, and the settings entry that stores only its hash."""
    from ai_photo_detector.serving.keyring import hash_key, new_key

    scopes = scopes or ["predict"]
    key = new_key()
    entry = {"id": key_id, "sha256": hash_key(key), "scopes": scopes}
    console.print("API key (shown once, store it safely):", style="bold")
    typer.echo(key)
    console.print("settings entry for auth.keys (YAML or APD_AUTH__KEYS as a JSON list):")
    typer.echo(json.dumps(entry))

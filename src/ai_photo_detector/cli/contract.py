"""The openapi command: the HTTP contract as a document, written only where it breaks no client
of ``/v1`` without a major version move (``contract.API_VERSION``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ai_photo_detector.contract.compatibility import breaking_changes
from ai_photo_detector.contract.compatibility import check as breaking
from ai_photo_detector.errors import DetectorError, InputError


class ContractBroken(DetectorError):
    """The API document would break ``/v1`` clients, or the checked-in one is stale."""

    code = "contract_broken"


def live_document() -> dict[str, Any]:
    """The OpenAPI document of the app as built now, normalised as it is written (JSON types
    only). The app is built, never started: no model, store or queue is opened; and the
    document is made whatever ``server.docs`` says."""
    from ai_photo_detector.serving.api.app import create_app
    from ai_photo_detector.settings import Settings

    document: dict[str, Any] = json.loads(render(create_app(Settings()).openapi()))
    return document


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def _listed(breaks: list[str]) -> str:
    return "\n".join(f"  - {line}" for line in breaks)


def _read(path: Path) -> dict[str, Any]:
    try:
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} cannot be read as an OpenAPI document: {exc}") from exc
    return document


def openapi(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the document here (default: standard output)."),
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Compare with --out without writing; fail if they differ."),
    ] = False,
) -> None:
    """Write the HTTP API's OpenAPI document; refuse one that breaks /v1 clients.

    A break (a route, a response field or a request's leniency taken away) is written only
    once API_VERSION's major number has moved."""
    document = live_document()
    text = render(document)
    if check and out is None:
        raise InputError("--check compares with a file: name it with --out")
    if out is None:
        typer.echo(text, nl=False)
        return
    old = _read(out) if out.exists() else None
    breaks = breaking(old, document) if old is not None else []
    if check:
        if old is None:
            raise ContractBroken(f"{out} does not exist: write it with `make openapi`")
        if breaks:
            raise ContractBroken(
                f"{out} is stale and the API breaks it without a major version move:\n"
                + _listed(breaks)
            )
        if old != document:
            kind = "a new major version" if breaking_changes(old, document) else "additive changes"
            raise ContractBroken(f"{out} is stale: {kind}: regenerate with `make openapi`")
        if out.read_text(encoding="utf-8") != text:
            raise ContractBroken(
                f"{out} is not written as generated: regenerate with `make openapi`"
            )
        typer.echo(f"{out} is up to date")
        return
    if breaks:
        raise ContractBroken(
            f"not overwriting {out}: the API breaks /v1 clients without a major version move "
            "(raise API_VERSION's major number in ai_photo_detector.contract, or undo):\n"
            + _listed(breaks)
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {out}")

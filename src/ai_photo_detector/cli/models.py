"""The models command group: the MLflow registry, promotion, rollback, audit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ai_photo_detector.cli.common import ConfigOption, console, load, opened_store
from ai_photo_detector.registry.registry import Registry

app = typer.Typer(no_args_is_help=True, help="The model registry (MLflow).")


@contextmanager
def _registry(config: Path | None, write: bool = True) -> Iterator[Registry]:
    """The registry, with the store its audit log lives in (closed afterwards; migrated only
    by commands that write)."""
    settings = load(config)
    with opened_store(settings, write) as store:
        yield Registry(settings, store)


@app.command("register")
def models_register(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    config: ConfigOption = None,
) -> None:
    """Register a bundle as a new model version (metrics as tags)."""
    with _registry(config) as registry:
        version = registry.register(bundle, reason=reason)
    typer.echo(version)


@app.command("list")
def models_list(config: ConfigOption = None) -> None:
    """Versions, their aliases and main metrics."""
    from rich.table import Table

    registry = Registry(load(config))  # reads MLflow only
    table = Table("version", "aliases", "bundle", "ROC-AUC", "ECE", "deployable", "created")
    for info in registry.versions():
        table.add_row(
            info.version,
            ", ".join(info.aliases),
            f"{info.tags.get('bundle.name', '')} {info.tags.get('bundle.version', '')}",
            info.tags.get("metric.roc_auc", ""),
            info.tags.get("metric.ece", ""),
            info.tags.get("deployable", ""),
            info.created_at[:19],
        )
    Console(width=160).print(table)


@app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="Version number.")],
    alias: Annotated[str, typer.Option(help="champion or challenger.")] = "champion",
    data: Annotated[
        list[Path] | None, typer.Option("--data", help="Evaluate both versions on this data.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Skip the promotion gate (needs --reason).")] = False,
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    config: ConfigOption = None,
) -> None:
    """Point an alias at a version; a worse champion than the current one is refused."""
    with _registry(config) as registry:
        comparison = registry.compare_on_data(version, data) if data and not force else None
        previous = registry.promote(
            version, alias, force=force, reason=reason, comparison=comparison
        )
    console.print(f"{registry.name}@{alias}: {previous or '-'} -> {version}")


@app.command("rollback")
def models_rollback(
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    config: ConfigOption = None,
) -> None:
    """Champion back to the previous champion."""
    with _registry(config) as registry:
        old, new = registry.rollback(reason=reason)
    console.print(f"{registry.name}@champion: {old} -> {new}")


@app.command("shadow-report")
def models_shadow_report(
    hours: Annotated[float, typer.Option(help="Pairs of the last N hours.")] = 24.0,
    config: ConfigOption = None,
) -> None:
    """Champion vs challenger on the same images: disagreement, correlation, accuracy."""
    from datetime import UTC, datetime, timedelta

    from rich.table import Table

    from ai_photo_detector.monitoring.shadow import shadow_report

    with opened_store(load(config), write=False) as store:
        pairs = shadow_report(store, datetime.now(UTC) - timedelta(hours=hours))
    table = Table(
        "answered",
        "mirrored",
        "pairs",
        "disagreement",
        "score corr.",
        "reviewed",
        "answered acc.",
        "mirrored acc.",
    )

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    for row in pairs:
        table.add_row(
            f"{row['primary']['name']} {row['primary']['version']}",
            f"{row['shadow']['name']} {row['shadow']['version']}",
            str(row["pairs"]),
            fmt(row["disagreement"]),
            fmt(row["score_correlation"]),
            str(row["reviewed"]),
            fmt(row["primary_accuracy"]),
            fmt(row["shadow_accuracy"]),
        )
    Console(width=160).print(table)


@app.command("audit")
def models_audit(
    limit: Annotated[int, typer.Option(help="Newest N events.")] = 50,
    config: ConfigOption = None,
) -> None:
    """The registry audit log: who changed what, when and why."""
    from ai_photo_detector.persistence.audit import audit_log

    with opened_store(load(config), write=False) as store:
        events = audit_log(store, limit)
    for event in events:
        typer.echo(json.dumps(event))

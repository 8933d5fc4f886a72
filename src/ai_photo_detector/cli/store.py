"""The store's command groups: db (migrations), feedback (export), drift (report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ai_photo_detector.cli.common import (
    ConfigOption,
    console,
    load,
    opened_store,
    store_errors,
)

db_app = typer.Typer(no_args_is_help=True, help="The store (prediction log, drift history).")
feedback_app = typer.Typer(no_args_is_help=True, help="Reviewer feedback.")
drift_app = typer.Typer(no_args_is_help=True, help="Drift reports.")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    config: ConfigOption = None,
) -> None:
    """Apply the store's migrations (the service also applies them on start)."""
    from ai_photo_detector.persistence.store import make_engine, tables, upgrade

    settings = load(config)
    engine = make_engine(settings.database_url)
    try:
        with store_errors():
            upgrade(engine, revision)
            found = sorted(tables(engine))
    finally:
        engine.dispose()
    console.print(f"{engine.url.render_as_string()} at {revision}: {found}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. base.")],
    config: ConfigOption = None,
) -> None:
    """Revert the store's migrations down to a revision."""
    from ai_photo_detector.persistence.store import downgrade, make_engine

    settings = load(config)
    engine = make_engine(settings.database_url)
    try:
        with store_errors():
            downgrade(engine, revision)
    finally:
        engine.dispose()
    console.print(f"{engine.url.render_as_string()} at {revision}")


@feedback_app.command("export")
def feedback_export(
    out: Annotated[Path, typer.Option(help="Dataset folder to write.")],
    days: Annotated[float, typer.Option(help="Feedback of the last N days.")] = 30.0,
    config: ConfigOption = None,
) -> None:
    """Reviewed predictions as a training dataset (label folders where images were stored,
    always a manifest.csv for ``train --data``)."""
    from datetime import UTC, datetime, timedelta

    from ai_photo_detector.persistence.feedback import export_dataset

    with opened_store(load(config), write=False) as store:
        summary = export_dataset(store, out, datetime.now(UTC) - timedelta(days=days))
    console.print(summary)


@drift_app.command("report")
def drift_report(
    out: Annotated[Path, typer.Option(help="Report file (.md or .html).")] = Path(
        "reports/drift.html"
    ),
    model: Annotated[str | None, typer.Option(help="Model name (default: all).")] = None,
    hours: Annotated[float, typer.Option(help="History of the last N hours.")] = 168.0,
    config: ConfigOption = None,
) -> None:
    """Write the drift history as an HTML or Markdown report with plots."""
    from ai_photo_detector.monitoring.report import write_drift_report
    from ai_photo_detector.persistence.drift_history import history

    with opened_store(load(config), write=False) as store:
        entries = history(store, model, limit=10_000, hours=hours)
    written = write_drift_report(entries, out)
    console.print(f"{len(entries)} drift reports written to {written}")

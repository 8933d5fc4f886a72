"""The ``ai-photo-detector`` command line: one module per command group, one error boundary
(``common.Commands``) for all of them."""

from __future__ import annotations

import typer

from ai_photo_detector.cli import (
    batch,
    contract,
    data,
    keys,
    models,
    remote,
    scoring,
    serve,
    store,
    training,
)
from ai_photo_detector.cli.common import Commands

app = typer.Typer(cls=Commands, no_args_is_help=True, help="Detect AI-generated product photos.")
app.add_typer(data.app, name="data")
app.command()(training.train)
app.command()(training.recalibrate)
app.command()(training.quantize)
app.command()(training.retrain)
app.command()(training.optimize)
app.command("evaluate")(scoring.evaluate_command)
app.command()(scoring.predict)
app.command()(scoring.explain)
app.add_typer(keys.app, name="keys")
app.add_typer(store.db_app, name="db")
app.add_typer(store.feedback_app, name="feedback")
store.feedback_app.command("send")(remote.feedback_send)
app.add_typer(remote.jobs_app, name="jobs")
app.add_typer(store.drift_app, name="drift")
app.add_typer(models.app, name="models")
app.command()(serve.serve)
app.command()(batch.worker)
app.command()(batch.score)
app.command()(contract.openapi)

__all__ = ["app"]

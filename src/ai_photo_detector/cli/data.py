"""The data command group: validate datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ai_photo_detector.cli.common import (
    ConfigOption,
    console,
    load,
    progress_bars,
)

app = typer.Typer(no_args_is_help=True, help="Inspect and validate datasets.")


@app.command("validate")
def data_validate(
    paths: Annotated[list[Path], typer.Argument(help="Dataset folders or CSV manifests.")],
    out: Annotated[Path, typer.Option(help="Folder for data_report.json/.txt.")] = Path("reports"),
    config: ConfigOption = None,
) -> None:
    """Validate datasets: counts, unreadable files, duplicates, balance, shortcut audit (of the
    files, and of the model views the configured training pipeline makes of them)."""
    from ai_photo_detector.data.discovery import discover, labels_of
    from ai_photo_detector.data.scan import scan
    from ai_photo_detector.data.validate import build_report, summary_text, write_report
    from ai_photo_detector.training.backbones import backbone_class

    settings = load(config)
    samples = discover(list(paths), settings.data.extensions)
    with progress_bars() as progress:
        backbone = backbone_class(settings.training.backbone)(settings, labels_of(samples))
        advance = progress("scanning images", len(samples))
        images = scan(samples, on_progress=lambda: advance(1), view_spec=backbone.preprocessing())
        report = build_report(images, settings.data)
    json_path, text_path = write_report(report, out)
    for line in summary_text(report).splitlines():
        style = "bold red" if "[ALARM]" in line else "yellow" if "[WARN]" in line else ""
        console.print(line, style=style, markup=False, highlight=False)
    console.print(f"report written to {json_path} and {text_path}")

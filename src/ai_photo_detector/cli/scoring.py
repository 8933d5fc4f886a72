"""Commands that score images with a bundle: evaluate, predict, explain."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from ai_photo_detector.cli.common import (
    ConfigOption,
    console,
    load,
    open_detector,
    progress_bars,
)
from ai_photo_detector.errors import InputError


def evaluate_command(
    data: Annotated[list[Path], typer.Option("--data", help="Dataset folder or CSV (repeatable).")],
    model: Annotated[str | None, typer.Option(help="Bundle folder (default: APD_MODEL).")] = None,
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("reports/evaluation"),
    config: ConfigOption = None,
) -> None:
    """Evaluate a bundle on labelled data: JSON, Markdown and PNG plots."""
    from ai_photo_detector.data.discovery import discover
    from ai_photo_detector.evaluation.report import evaluate, markdown_report, write_report

    settings = load(config)
    detector = open_detector(model, settings)
    samples = discover(list(data), settings.data.extensions)
    with progress_bars() as progress:
        advance = progress("evaluating", len(samples) * (1 + len(settings.evaluation.robustness)))
        report = evaluate(detector, samples, settings, on_progress=advance)
    files = write_report(report, out)
    console.print(markdown_report(report), markup=False, highlight=False)
    console.print("written: " + ", ".join(str(f) for f in files))


def _expand(paths: list[Path], extensions: list[str]) -> Iterator[Path]:
    allowed = {e.lower() for e in extensions}
    for path in paths:
        if path.is_dir():
            yield from (
                p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in allowed
            )
        else:
            yield path


def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    model: Annotated[str | None, typer.Option(help="Bundle folder (default: APD_MODEL).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    config: ConfigOption = None,
) -> None:
    """Score images with ONNX Runtime; unreadable files get an error line, the run goes on."""
    from ai_photo_detector.cli.file_predictions import predict_files

    settings = load(config)
    detector = open_detector(model, settings)
    failures = 0
    for result in predict_files(detector, _expand(paths, settings.data.extensions), settings):
        if "error" in result:
            failures += 1
        if as_json:
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()
        elif "error" in result:
            console.print(f"{result['path']}: [red]{result['error']['message']}[/red]")
        else:
            why = f"\t({', '.join(result['reasons'])})" if result["reasons"] else ""
            typer.echo(
                f"{result['path']}\t{result['label']}\t{result['band']}\t"
                f"{result['probability']:.4f}{why}"
            )
    if failures:
        console.print(f"{failures} file(s) could not be scored")


def explain(
    image: Annotated[Path, typer.Argument(help="An image file.")],
    model: Annotated[str | None, typer.Option(help="Bundle folder (default: APD_MODEL).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the evidence drawn over the photo (JPEG) here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    config: ConfigOption = None,
) -> None:
    """Score one image and show why: the evidence per region of what the model saw.

    The same exact class-activation evidence as POST /v1/explain: the grid averages to the
    AI label's logit margin over its closest rival.
    """
    from ai_photo_detector.imaging import ImageError, file_limits
    from ai_photo_detector.model.explain import explain_bytes

    settings = load(config)
    detector = open_detector(model, settings)
    try:
        explained = explain_bytes(detector, image.read_bytes(), file_limits(settings))
    except (ImageError, OSError) as exc:  # name the file: the message alone does not
        raise InputError(f"{image}: {getattr(exc, 'message', exc)}") from exc
    if out is not None:
        out.write_bytes(explained.overlay_jpeg)
    verdict, found = explained.verdict, explained.evidence
    if as_json:
        result = {
            "path": str(image),
            "label": verdict.label,
            "band": verdict.band,
            "probability": verdict.probability,
            "reasons": list(verdict.reasons),
            "target": found.target,
            "against": found.against,
            "margin": found.margin,
            "grid": [[round(float(v), 5) for v in row] for row in found.grid],
            "overlay": str(out) if out is not None else None,
        }
        typer.echo(json.dumps(result))
        return
    console.print(
        f"{image}: [bold]{verdict.label}[/bold] ({verdict.band}"
        f"{': ' + ', '.join(verdict.reasons) if verdict.reasons else ''}), probability "
        f"{verdict.probability:.4f}; {found.target} over {found.against} by a logit margin of "
        f"{found.margin:.3f}, per region (top row first):"
    )
    for row in found.grid:
        typer.echo(" ".join(f"{v:7.2f}" for v in row))
    if out is not None:
        console.print(f"overlay written to {out}")

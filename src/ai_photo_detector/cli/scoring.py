"""Commands that score images with a bundle: evaluate, predict, explain."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ai_photo_detector.cli.common import (
    ConfigOption,
    KeyFileOption,
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
    url: Annotated[
        str | None,
        typer.Option("--url", help="Send the photos to this running service instead."),
    ] = None,
    api_key_file: KeyFileOption = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=256, help="Photos in flight at once (with --url).")
    ] = 8,
    config: ConfigOption = None,
) -> None:
    """Score images: with a local bundle (ONNX Runtime), or with --url through a running
    service (logged, monitored, reviewable). Unreadable files get an error line; the run goes on."""
    settings = load(config)
    files = _expand(paths, settings.data.extensions)
    failures = 0

    def emit(result: dict[str, Any]) -> None:
        nonlocal failures
        failures += "error" in result
        print_prediction(result, as_json)

    if url is not None:
        from ai_photo_detector.cli.remote import predict_remote

        listed = list(files)
        with progress_bars() as progress:
            advance = progress("scoring", len(listed))
            predict_remote(listed, url, api_key_file, concurrency, emit, advance)
    else:
        from ai_photo_detector.cli.file_predictions import predict_files

        detector = open_detector(model, settings)
        for result in predict_files(detector, files, settings):
            emit(result)
    if failures:
        console.print(f"{failures} file(s) could not be scored")


def print_prediction(result: dict[str, Any], as_json: bool) -> None:
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


def explain(
    image: Annotated[Path, typer.Argument(help="An image file.")],
    model: Annotated[str | None, typer.Option(help="Bundle folder (default: APD_MODEL).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the evidence drawn over the photo (JPEG) here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    url: Annotated[
        str | None, typer.Option("--url", help="Ask this running service instead.")
    ] = None,
    api_key_file: KeyFileOption = None,
    config: ConfigOption = None,
) -> None:
    """Score one image and show why: the evidence per region of what the model saw.

    The same exact class-activation evidence as POST /v1/explain: the grid averages to the
    AI label's logit margin over its closest rival.
    """
    if url is not None:
        from ai_photo_detector.cli.remote import explain_remote

        answer = explain_remote(image, url, api_key_file, out)
        found = answer.explanation
        shown = Shown(answer.label, answer.band, answer.probability, answer.reasons)
        show_explanation(
            image, shown, found.target, found.against, found.margin, found.grid, out, as_json
        )
        return
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
    verdict, evidence = explained.verdict, explained.evidence
    shown = Shown(verdict.label, verdict.band, verdict.probability, list(verdict.reasons))
    grid = [[float(v) for v in row] for row in evidence.grid]
    show_explanation(
        image, shown, evidence.target, evidence.against, evidence.margin, grid, out, as_json
    )


@dataclass(frozen=True)
class Shown:
    label: str
    band: str
    probability: float
    reasons: list[str]


def show_explanation(
    image: Path,
    verdict: Shown,
    target: str,
    against: str,
    margin: float,
    grid: list[list[float]],
    out: Path | None,
    as_json: bool,
) -> None:
    if as_json:
        result = {
            "path": str(image),
            "label": verdict.label,
            "band": verdict.band,
            "probability": verdict.probability,
            "reasons": list(verdict.reasons),
            "target": target,
            "against": against,
            "margin": margin,
            "grid": [[round(v, 5) for v in row] for row in grid],
            "overlay": str(out) if out is not None else None,
        }
        typer.echo(json.dumps(result))
        return
    console.print(
        f"{image}: [bold]{verdict.label}[/bold] ({verdict.band}"
        f"{': ' + ', '.join(verdict.reasons) if verdict.reasons else ''}), probability "
        f"{verdict.probability:.4f}; {target} over {against} by a logit margin of "
        f"{margin:.3f}, per region (top row first):"
    )
    for row in grid:
        typer.echo(" ".join(f"{v:7.2f}" for v in row))
    if out is not None:
        console.print(f"overlay written to {out}")

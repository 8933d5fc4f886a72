"""The ``ai-photo-detector`` command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from typer.core import TyperGroup

from ai_photo_detector.errors import DetectorError, InputError, RegistryUnavailable
from ai_photo_detector.settings import Settings, load_settings

# Exit codes of expected errors, first match wins: 1 for a refusal (the registry said no, an
# image could not be used), 2 for what must be fixed first (a bundle, a dataset, settings).
EXIT_CODES: tuple[tuple[type[DetectorError], int], ...] = (
    (RegistryUnavailable, 1),
    (InputError, 1),
    (DetectorError, 2),
)


class _Commands(TyperGroup):
    """The command line's one error boundary: any expected error, whatever command raised it,
    becomes one clear line on stderr and an exit code, never a traceback."""

    def invoke(self, ctx: Any) -> Any:  # a click context (typer vendors its own click)
        try:
            return super().invoke(ctx)
        except DetectorError as exc:
            console.print(f"[red]error ({exc.code}):[/red] ", end="")
            console.print(exc.message, markup=False, highlight=False)
            code = next(code for kind, code in EXIT_CODES if isinstance(exc, kind))
            raise typer.Exit(code) from exc


app = typer.Typer(cls=_Commands, no_args_is_help=True, help="Detect AI-generated product photos.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect and validate datasets.")
app.add_typer(data_app, name="data")
console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="YAML settings file (else APD_CONFIG).")
]


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]settings error:[/red] {exc}")
        raise typer.Exit(2) from exc


@contextmanager
def _progress() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:

        def factory(name: str, total: int) -> Callable[[int], None]:
            task = progress.add_task(name, total=total)
            return lambda units: progress.advance(task, units)

        yield factory


@data_app.command("validate")
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

    settings = _settings(config)
    samples = discover(list(paths), settings.data.extensions)
    with _progress() as progress:
        backbone = backbone_class(settings.training.backbone)(settings, labels_of(samples))
        advance = progress("scanning images", len(samples))
        images = scan(samples, on_progress=lambda: advance(1), view_spec=backbone.preprocessing())
        report = build_report(images, settings.data)
    json_path, text_path = write_report(report, out)
    for line in summary_text(report).splitlines():
        style = "bold red" if "[ALARM]" in line else "yellow" if "[WARN]" in line else ""
        console.print(line, style=style, markup=False, highlight=False)
    console.print(f"report written to {json_path} and {text_path}")


@app.command()
def train(
    data: Annotated[list[Path], typer.Option("--data", help="Dataset folder or CSV (repeatable).")],
    config: ConfigOption = None,
    name: Annotated[str, typer.Option(help="Bundle name.")] = "ai-photo-detector",
    version: Annotated[str | None, typer.Option(help="Bundle version (default: UTC time).")] = None,
    out: Annotated[Path | None, typer.Option(help="Runs folder (default from settings).")] = None,
) -> None:
    """Train, calibrate, evaluate and export a bundle; exits 1 when a quality gate fails."""
    from ai_photo_detector.training.pipeline import run_training

    settings = _settings(config)
    with _progress() as progress:
        outcome = run_training(
            list(data),
            settings,
            name=name,
            version=version,
            out_dir=out,
            progress=progress,
            log=lambda text: console.print(text, markup=False, highlight=False),
        )
    overall = outcome.report["overall"]
    console.print(
        f"bundle: {outcome.bundle_dir}\ntest ROC-AUC {overall['roc_auc']:.4f}, accuracy "
        f"{overall['accuracy']:.4f}, ECE {overall['ece']:.4f}"
    )
    sources = outcome.report.get("sources")
    if sources:
        for row in sources["rows"]:
            console.print(
                f"held-out {row['source']}: ROC-AUC {row['roc_auc']:.4f}, real photos in the "
                f"'ai' band {row['ai_band_fpr']:.1%}, uncertain {row['uncertain_share']:.1%}"
            )
    if outcome.gate_failures:
        for failure in outcome.gate_failures:
            console.print(f"[red]quality gate failed:[/red] {failure}")
        console.print("[red]the bundle is marked not deployable[/red]")
        raise typer.Exit(1)
    console.print("[green]all quality gates passed: the bundle is deployable[/green]")


def _exit_on_gate_failures(failures: list[str]) -> None:
    for failure in failures:
        console.print(f"[red]quality gate failed:[/red] {failure}")
    if failures:
        raise typer.Exit(1)


@app.command()
def recalibrate(
    run_dir: Annotated[Path, typer.Argument(help="A training run folder (holds bundle/).")],
    config: ConfigOption = None,
) -> None:
    """Re-fit temperature, threshold and bands on a run's validation split and re-evaluate.

    Uses ONNX Runtime only: change calibration targets without retraining.
    """
    from ai_photo_detector.finalize import recalibrate_run

    settings = _settings(config)
    with _progress() as progress:
        finished = recalibrate_run(run_dir, settings, progress)
    calibration = finished.manifest.calibration
    console.print(
        f"threshold {calibration.threshold:.4f}, bands real < {calibration.bands.real_below:.4f}"
        f" <= uncertain < {calibration.bands.ai_from:.4f} <= ai; test ECE "
        f"{finished.report['overall']['ece']:.4f}"
    )
    _exit_on_gate_failures(finished.failures)


@app.command()
def quantize(
    run_dir: Annotated[Path, typer.Argument(help="A training run of a fine-tuned backbone.")],
    images: Annotated[int, typer.Option(help="Training images that set activation ranges.")] = 256,
    config: ConfigOption = None,
) -> None:
    """Write RUN_DIR/bundle-int8: a static INT8 variant, re-calibrated, evaluated and gated on
    its own; prints its ROC-AUC cost against the float bundle on the same test split."""
    from ai_photo_detector.training.quantize import quantize_run

    settings = _settings(config)
    with _progress() as progress:
        finished, cost = quantize_run(run_dir, settings, images, progress)
    console.print(
        f"bundle: {run_dir / 'bundle-int8'}\ntest ROC-AUC {cost['int8_roc_auc']:.4f} against "
        f"{cost['float_roc_auc']:.4f} in float (cost {cost['roc_auc_cost']:+.4f})"
    )
    _exit_on_gate_failures(finished.failures)


@app.command()
def optimize(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder, rewritten in place.")],
) -> None:
    """Upgrade a bundle exported by an older version: same outputs, faster graph, head shipped.

    Folds the backbone's shape-computed padding into its convolutions and writes the linear
    head's weights for class activation maps (what export does now), checks the outputs are
    unchanged and rewrites the manifest's checksums.
    """
    from ai_photo_detector.training.graph import optimize_bundle

    upgrade = optimize_bundle(bundle)
    if upgrade.folded:
        console.print(
            f"folded {upgrade.folded} padding computations; outputs differ by at most "
            f"{upgrade.difference:.1e}"
        )
    if upgrade.head_added:
        console.print("added the head's weights (head.npz) for class activation maps")
    if not upgrade.folded and not upgrade.head_added:
        console.print("nothing to do: the bundle is already up to date")


def _open_detector(model: str | None, settings: Settings) -> Any:
    from ai_photo_detector.bundle import load_bundle
    from ai_photo_detector.inference import OnnxDetector

    bundle = load_bundle(model or settings.model)
    return OnnxDetector(
        bundle, settings.inference.intra_op_threads, settings.inference.inter_op_threads
    )


@app.command("evaluate")
def evaluate_command(
    data: Annotated[list[Path], typer.Option("--data", help="Dataset folder or CSV (repeatable).")],
    model: Annotated[str | None, typer.Option(help="Bundle folder (default: APD_MODEL).")] = None,
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("reports/evaluation"),
    config: ConfigOption = None,
) -> None:
    """Evaluate a bundle on labelled data: JSON, Markdown and PNG plots."""
    from ai_photo_detector.data.discovery import discover
    from ai_photo_detector.evaluation import evaluate, markdown_report, write_report

    settings = _settings(config)
    detector = _open_detector(model, settings)
    samples = discover(list(data), settings.data.extensions)
    with _progress() as progress:
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


@app.command()
def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    model: Annotated[str | None, typer.Option(help="Bundle folder (default: APD_MODEL).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    config: ConfigOption = None,
) -> None:
    """Score images with ONNX Runtime; unreadable files get an error line, the run goes on."""
    from ai_photo_detector.prediction import predict_files

    settings = _settings(config)
    detector = _open_detector(model, settings)
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


@app.command()
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
    from ai_photo_detector.explain import explain_bytes
    from ai_photo_detector.imaging import ImageError
    from ai_photo_detector.prediction import file_limits

    settings = _settings(config)
    detector = _open_detector(model, settings)
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


keys_app = typer.Typer(no_args_is_help=True, help="API keys.")
app.add_typer(keys_app, name="keys")
db_app = typer.Typer(no_args_is_help=True, help="The store (prediction log, drift history).")
app.add_typer(db_app, name="db")
feedback_app = typer.Typer(no_args_is_help=True, help="Reviewer feedback.")
app.add_typer(feedback_app, name="feedback")
drift_app = typer.Typer(no_args_is_help=True, help="Drift reports.")
app.add_typer(drift_app, name="drift")


models_app = typer.Typer(no_args_is_help=True, help="The model registry (MLflow).")
app.add_typer(models_app, name="models")


def _registry(config: Path | None) -> Any:
    from ai_photo_detector.persistence.store import Store
    from ai_photo_detector.registry.registry import Registry

    settings = _settings(config)
    return Registry(settings, Store(settings.database_url))


@models_app.command("register")
def models_register(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    config: ConfigOption = None,
) -> None:
    """Register a bundle as a new model version (metrics as tags)."""
    version = _registry(config).register(bundle, reason=reason)
    typer.echo(version)


@models_app.command("list")
def models_list(config: ConfigOption = None) -> None:
    """Versions, their aliases and main metrics."""
    from rich.table import Table

    registry = _registry(config)
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


def _compare_on_data(registry: Any, candidate: str, data: list[Path]) -> dict[str, Any] | None:
    """Evaluate the candidate and the champion on the same data (the promotion gate)."""
    from ai_photo_detector.data.discovery import discover
    from ai_photo_detector.inference import OnnxDetector, calibrated_probabilities
    from ai_photo_detector.metrics import safe_auc
    from ai_photo_detector.registry.registry import CHAMPION
    from ai_photo_detector.scoring import score_samples

    champion = registry.alias_version(CHAMPION)
    if champion is None or champion == candidate:
        return None
    samples = discover(list(data), registry.settings.data.extensions)
    aucs = {}
    for version in (candidate, champion):
        detector = OnnxDetector(registry.download(version))
        scored = score_samples(detector, samples)
        manifest = detector.manifest
        truth = (scored.targets(manifest.labels) == manifest.ai_index).astype(int)
        probs = calibrated_probabilities(scored.logits, manifest)[:, manifest.ai_index]
        aucs[version] = safe_auc(truth, probs)
    tolerance = registry.settings.registry.auc_tolerance
    return {
        "better_or_equal": aucs[candidate] >= aucs[champion] - tolerance,
        "why": f"ROC-AUC on {len(samples)} images: {aucs[candidate]:.4f} vs {aucs[champion]:.4f}",
        "candidate_roc_auc": aucs[candidate],
        "champion_roc_auc": aucs[champion],
    }


@models_app.command("promote")
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
    registry = _registry(config)
    comparison = _compare_on_data(registry, version, data) if data and not force else None
    previous = registry.promote(version, alias, force=force, reason=reason, comparison=comparison)
    console.print(f"{registry.name}@{alias}: {previous or '-'} -> {version}")


@models_app.command("rollback")
def models_rollback(
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    config: ConfigOption = None,
) -> None:
    """Champion back to the previous champion."""
    registry = _registry(config)
    old, new = registry.rollback(reason=reason)
    console.print(f"{registry.name}@champion: {old} -> {new}")


@models_app.command("shadow-report")
def models_shadow_report(
    hours: Annotated[float, typer.Option(help="Pairs of the last N hours.")] = 24.0,
    config: ConfigOption = None,
) -> None:
    """Champion vs challenger on the same images: disagreement, correlation, accuracy."""
    from datetime import UTC, datetime, timedelta

    from rich.table import Table

    from ai_photo_detector.monitoring.shadow import shadow_report
    from ai_photo_detector.persistence.store import Store

    settings = _settings(config)
    pairs = shadow_report(Store(settings.database_url), datetime.now(UTC) - timedelta(hours=hours))
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


@models_app.command("audit")
def models_audit(
    limit: Annotated[int, typer.Option(help="Newest N events.")] = 50,
    config: ConfigOption = None,
) -> None:
    """The registry audit log: who changed what, when and why."""
    from ai_photo_detector.persistence.audit import audit_log
    from ai_photo_detector.persistence.store import Store

    settings = _settings(config)
    for event in audit_log(Store(settings.database_url), limit):
        typer.echo(json.dumps(event))


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    config: ConfigOption = None,
) -> None:
    """Apply the store's migrations (the service also applies them on start)."""
    from ai_photo_detector.persistence.store import make_engine, tables, upgrade

    settings = _settings(config)
    engine = make_engine(settings.database_url)
    upgrade(engine, revision)
    console.print(f"{engine.url.render_as_string()} at {revision}: {sorted(tables(engine))}")
    engine.dispose()


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. base.")],
    config: ConfigOption = None,
) -> None:
    """Revert the store's migrations down to a revision."""
    from ai_photo_detector.persistence.store import downgrade, make_engine

    settings = _settings(config)
    engine = make_engine(settings.database_url)
    downgrade(engine, revision)
    console.print(f"{engine.url.render_as_string()} at {revision}")
    engine.dispose()


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
    from ai_photo_detector.persistence.store import Store

    settings = _settings(config)
    store = Store(settings.database_url)
    summary = export_dataset(store, out, datetime.now(UTC) - timedelta(days=days))
    store.close()
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
    from ai_photo_detector.persistence.store import Store

    settings = _settings(config)
    store = Store(settings.database_url)
    entries = history(store, model, limit=10_000, hours=hours)
    store.close()
    written = write_drift_report(entries, out)
    console.print(f"{len(entries)} drift reports written to {written}")


@keys_app.command("create")
def keys_create(
    key_id: Annotated[str, typer.Option("--id", help="Key id, shown in logs.")],
    scopes: Annotated[list[str], typer.Option("--scope", help="predict or admin.")] = ["predict"],  # noqa: B006
) -> None:
    """Make a new API key: print it once, and the settings entry that stores only its hash."""
    from ai_photo_detector.serving.api.auth import hash_key, new_key

    key = new_key()
    entry = {"id": key_id, "sha256": hash_key(key), "scopes": scopes}
    console.print("API key (shown once, store it safely):", style="bold")
    typer.echo(key)
    console.print("settings entry for auth.keys (YAML or APD_AUTH__KEYS as a JSON list):")
    typer.echo(json.dumps(entry))


@app.command()
def serve(
    model: Annotated[str | None, typer.Option(help="Bundle folder (default: APD_MODEL).")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    config: ConfigOption = None,
) -> None:
    """Serve the HTTP API with the configured model."""
    from ai_photo_detector.serving.api.server import run_server

    settings = _settings(config)
    server = {"host": host or settings.server.host, "port": port or settings.server.port}
    run_server(
        settings.model_copy(
            update={
                "model": model or settings.model,
                "server": settings.server.model_copy(update=server),
            }
        )
    )


if __name__ == "__main__":  # pragma: no cover
    app()

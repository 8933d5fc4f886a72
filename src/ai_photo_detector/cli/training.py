"""Commands that make bundles: train, recalibrate, quantize, optimize."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ai_photo_detector.cli.common import (
    ConfigOption,
    console,
    exit_on_gate_failures,
    load,
    progress_bars,
)
from ai_photo_detector.errors import InputError


def train(
    data: Annotated[list[Path], typer.Option("--data", help="Dataset folder or CSV (repeatable).")],
    config: ConfigOption = None,
    name: Annotated[str, typer.Option(help="Bundle name.")] = "ai-photo-detector",
    version: Annotated[str | None, typer.Option(help="Bundle version (default: UTC time).")] = None,
    out: Annotated[Path | None, typer.Option(help="Runs folder (default from settings).")] = None,
) -> None:
    """Train, calibrate, evaluate and export a bundle; exits 1 when a quality gate fails."""
    from ai_photo_detector.training.pipeline import run_training

    settings = load(config)
    with progress_bars() as progress:
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


MadeFromArgument = Annotated[
    Path,
    typer.Argument(
        help="A training run folder (bundle/ beside its splits.json), or a bundle folder whose "
        "split is made again from the data its manifest names."
    ),
]


def recalibrate(
    folder: MadeFromArgument,
    config: ConfigOption = None,
    version: Annotated[
        str | None, typer.Option(help="Stamp the re-calibrated bundle with this version.")
    ] = None,
) -> None:
    """Re-fit temperature, threshold and bands (on the run's out-of-source predictions, else
    its validation split) and re-evaluate on its test split; the bundle is rewritten in place.

    Uses ONNX Runtime only: change calibration targets without retraining.
    """
    from ai_photo_detector.evaluation.made_from import recalibrate as recalibrate_bundle

    settings = load(config)
    with progress_bars() as progress:
        finished = recalibrate_bundle(folder, settings, progress, version)
    calibration = finished.manifest.calibration
    console.print(
        f"threshold {calibration.threshold:.4f}, bands real < {calibration.bands.real_below:.4f}"
        f" <= uncertain < {calibration.bands.ai_from:.4f} <= ai"
        + (
            f" (the reviewed kind from {calibration.bands.ai_from_reviewed:.4f})"
            if calibration.bands.ai_from_reviewed is not None
            else ""
        )
        + "; test ECE "
        f"{finished.report['overall']['ece']:.4f}"
    )
    exit_on_gate_failures(finished.failures)


def quantize(
    folder: MadeFromArgument,
    out: Annotated[
        Path | None,
        typer.Option(help="Where the variant goes (default: RUN/bundle-int8, or BUNDLE-int8)."),
    ] = None,
    images: Annotated[int, typer.Option(help="Training images that set activation ranges.")] = 256,
    config: ConfigOption = None,
    version: Annotated[
        str | None, typer.Option(help="The variant's version (default: the float bundle's).")
    ] = None,
) -> None:
    """Write a static INT8 variant of a fine-tuned bundle, re-calibrated, evaluated and gated on
    its own; prints its ROC-AUC cost against the float bundle on the same test split."""
    from ai_photo_detector.evaluation.made_from import SPLITS_FILE
    from ai_photo_detector.training.quantize import quantize as quantize_bundle

    settings = load(config)
    if out is None:
        is_run = (folder / SPLITS_FILE).is_file()
        out = folder / "bundle-int8" if is_run else folder.with_name(f"{folder.name}-int8")
    with progress_bars() as progress:
        finished = quantize_bundle(folder, out, settings, images, progress, version)
    cost = finished.report["quantization"]
    console.print(
        f"bundle: {out}\ntest ROC-AUC {finished.report['overall']['roc_auc']:.4f} against "
        f"{cost['float_roc_auc']:.4f} in float (cost {cost['roc_auc_cost']:+.4f})"
    )
    exit_on_gate_failures(finished.failures)


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


def retrain(
    data: Annotated[
        list[str] | None,
        typer.Option("--data", help="Base dataset folder (repeatable; else retraining.data)."),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    feedback_store: Annotated[
        list[str] | None,
        typer.Option(
            "--feedback-store",
            help="Another region's database URL: its reviewed feedback counts too (repeatable).",
        ),
    ] = None,
    shadow: Annotated[
        float | None,
        typer.Option(help="Then ask the service to load the challenger and mirror this share."),
    ] = None,
    service: Annotated[
        str, typer.Option(help="The service to ask (its admin key in APD_ADMIN_KEY).")
    ] = "http://127.0.0.1:8000",
    report: Annotated[Path | None, typer.Option(help="Write the outcome here as JSON.")] = None,
    config: ConfigOption = None,
) -> None:
    """Retrain on reviewed feedback plus the base data with the shipped recipe, gate, register,
    and point the `challenger` alias at it; exits 1 (nothing moved) when a gate fails."""
    import json
    import os
    from contextlib import ExitStack

    from ai_photo_detector.cli.common import opened_store
    from ai_photo_detector.training.retrain import retrain as run_retrain

    settings = load(config)
    with ExitStack() as stack:
        store = stack.enter_context(opened_store(settings, write=True))
        others = [
            stack.enter_context(
                opened_store(settings.model_copy(update={"database_url": url}), write=False)
            )
            for url in feedback_store or []
        ]
        progress = stack.enter_context(progress_bars())
        outcome = run_retrain(
            settings,
            store,
            data=data,
            feedback_stores=others,
            reason=reason,
            progress=progress,
            log=lambda text: console.print(text, markup=False, highlight=False),
        )
    if report is not None:
        report.write_text(json.dumps(outcome.as_dict(), indent=2) + "\n")
    if outcome.gate_failures:
        exit_on_gate_failures(outcome.gate_failures)
    console.print(
        f"[green]registered version {outcome.registry_version}; {outcome.challenger} points at "
        "it[/green]"
    )
    if shadow is not None:
        import urllib.error
        import urllib.request

        change = urllib.request.Request(
            f"{service.rstrip('/')}/v1/admin/rollout",
            data=json.dumps({"challenger": outcome.challenger, "shadow_fraction": shadow}).encode(),
            headers={
                "Authorization": f"Bearer {os.environ.get('APD_ADMIN_KEY', '')}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(change, timeout=600):
                pass
        except (urllib.error.URLError, OSError) as exc:
            raise InputError(f"the service did not take the rollout change: {exc}") from exc
        console.print(f"the service mirrors {shadow:.0%} of its traffic to the challenger")

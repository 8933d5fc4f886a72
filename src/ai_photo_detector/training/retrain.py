"""Retraining on reviewed feedback: export what reviewers labelled, add it to the base data,
train with the shipped recipe, finalise and gate, register, and point ``challenger`` at it.

A failed gate never moves an alias: the bundle stays in its run folder, the audit log says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ai_photo_detector.errors import BundleInvalid, DatasetInvalid
from ai_photo_detector.persistence.audit import record_event
from ai_photo_detector.persistence.feedback import export_dataset
from ai_photo_detector.persistence.store import Store
from ai_photo_detector.progress import ProgressFactory, no_progress
from ai_photo_detector.registry.registry import CHALLENGER, Registry, resolve_bundle
from ai_photo_detector.settings import Settings, load_settings


@dataclass
class RetrainReport:
    status: str  # registered or gates_failed
    version: str  # the bundle's version
    bundle: str
    feedback: dict[str, Any]
    data: list[str]
    gate_failures: list[str] = field(default_factory=list)
    registry_version: str | None = None
    challenger: str | None = None  # the reference serving follows, once registered
    compared_with: str | None = None  # the champion bundle the held-out source gates compared

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def recipe_settings(settings: Settings) -> Settings:
    """The settings training runs with: the recipe file's, where one is named, keeping this
    deployment's store, tracking and registry."""
    recipe = settings.retraining.recipe
    if recipe is None:
        return settings
    return load_settings(
        recipe,
        database_url=settings.database_url,
        mlflow=settings.mlflow.model_dump(),
        registry=settings.registry.model_dump(),
    )


def with_boosted_source(settings: Settings, source: str) -> Settings:
    """The settings with ``source`` added to ``training.boosted_sources``."""
    boosted = [*settings.training.boosted_sources, source]
    training = settings.training.model_copy(update={"boosted_sources": boosted})
    return settings.model_copy(update={"training": training})


def compared_with_champion(
    recipe: Settings, settings: Settings, log: Callable[[str], None]
) -> Settings:
    """The recipe with ``gates.champion_bundle`` set to the model this deployment serves
    (``model``), so a held-out source that model also struggled with does not refuse the
    challenger; unchanged when one is named already or the served model cannot be found."""
    if recipe.gates.champion_bundle:
        return recipe
    try:
        champion = resolve_bundle(settings.model, settings).bundle.path
    except (BundleInvalid, OSError) as exc:
        log(f"no champion to compare the gates with ({exc}); the gates are absolute")
        return recipe
    log(f"gates compare held-out sources with the champion {champion}")
    gates = recipe.gates.model_copy(update={"champion_bundle": str(champion)})
    return recipe.model_copy(update={"gates": gates})


def retrain(
    settings: Settings,
    store: Store,
    *,
    data: list[str] | None = None,
    feedback_stores: Sequence[Store] = (),
    actor: str | None = None,
    reason: str = "",
    progress: ProgressFactory = no_progress,
    log: Callable[[str], None] = print,
) -> RetrainReport:
    from ai_photo_detector.training.pipeline import run_training

    retraining = settings.retraining
    base = list(data or retraining.data)
    if not base:
        raise DatasetInvalid("no base data: give --data or set retraining.data")
    name = settings.registry.model_name
    version = datetime.now(UTC).strftime("%Y%m%d.%H%M%S")
    recipe = recipe_settings(settings)
    feedback_dir = Path(recipe.training.output_dir) / f"feedback-{version}"
    since = datetime.now(UTC) - timedelta(days=retraining.feedback_days)
    feedback = export_dataset(store, feedback_dir, since, feedback_stores)
    log(
        f"feedback: {feedback['reviewed']} reviewed, {feedback['images_copied']} images "
        f"exported to {feedback_dir}"
    )
    recipe = compared_with_champion(recipe, settings, log)
    sources = base + ([str(feedback_dir)] if feedback["images_copied"] else [])
    if feedback["images_copied"] and retraining.boost_feedback:
        recipe = with_boosted_source(recipe, feedback_dir.name)  # discovery names it so
        boost = recipe.training.boost_weight
        log(f"the feedback weighs {boost:g} average training groups ({feedback_dir.name} boosted)")
    outcome = run_training(
        list[str | Path](sources), recipe, name=name, version=version, progress=progress, log=log
    )
    report = RetrainReport(
        status="gates_failed" if outcome.gate_failures else "registered",
        version=version,
        bundle=str(outcome.bundle_dir),
        feedback=feedback,
        data=sources,
        gate_failures=list(outcome.gate_failures),
        compared_with=recipe.gates.champion_bundle,
    )
    if not outcome.gate_failures:  # a failed gate moves nothing: no version, no alias
        registry = Registry(settings, store)
        report.registry_version = registry.register(outcome.bundle_dir, actor, reason or "retrain")
        registry.promote(
            report.registry_version, CHALLENGER, actor=actor, reason=reason or "retrained"
        )
        report.challenger = f"models:/{registry.name}@{CHALLENGER}"
    record_event(
        store,
        action="retrain",
        model_name=name,
        version=report.registry_version or version,
        alias=CHALLENGER if report.challenger else "",
        previous=None,
        actor=actor,
        reason=reason,
        details=report.as_dict(),
    )
    return report

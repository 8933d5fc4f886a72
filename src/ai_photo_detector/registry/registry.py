"""The MLflow model registry: versions carry bundles, aliases name champion and challenger.

MLflow is imported only here, and this module only at start, reload or from the command line,
never per request. Every change is written to the store's audit log with who, when and why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ai_photo_detector.errors import RegistryUnavailable
from ai_photo_detector.hashing import sha256_file
from ai_photo_detector.model.bundle import MANIFEST_FILE, Bundle, BundleError, load_bundle
from ai_photo_detector.persistence.audit import record_event
from ai_photo_detector.persistence.store import Store
from ai_photo_detector.settings import Settings

CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG = "champion_history"  # JSON list of past champions, newest last
MANIFEST_TAG = "bundle.manifest_sha256"  # what a version is: its bundle's manifest checksum
REFERENCE_PREFIX = "models:/"


logger = logging.getLogger(__name__)


class RegistryError(RegistryUnavailable):
    """A registry action that cannot be done, with the reason."""


class RegistryUnreachable(RegistryError):
    """The registry did not answer (as opposed to answering that something does not exist)."""


@dataclass
class VersionInfo:
    version: str
    aliases: list[str]
    tags: dict[str, str]
    created_at: str


def parse_reference(reference: str) -> tuple[str, str]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> (name, alias or version)."""
    body = reference[len(REFERENCE_PREFIX) :]
    if "@" in body:
        name, alias = body.split("@", 1)
    elif "/" in body:
        name, alias = body.rsplit("/", 1)
    else:
        raise RegistryError(f"{reference!r} is not models:/NAME@ALIAS or models:/NAME/VERSION")
    if not name or not alias:
        raise RegistryError(f"{reference!r} is not models:/NAME@ALIAS or models:/NAME/VERSION")
    return name, alias


class Registry:
    def __init__(self, settings: Settings, store: Store | None = None, name: str | None = None):
        import mlflow
        from mlflow import MlflowClient

        self._mlflow = mlflow
        self.settings = settings
        self.name = name or settings.registry.model_name
        mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
        self.client = MlflowClient(tracking_uri=settings.mlflow.tracking_uri)
        self.store = store

    # --- reading -------------------------------------------------------------------------

    def _model(self) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise RegistryUnreachable(
                f"the registry at {self.settings.mlflow.tracking_uri} cannot answer: {exc}"
            ) from exc

    def versions(self) -> list[VersionInfo]:
        model = self._model()
        if model is None:
            return []
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        found = self.client.search_model_versions(f"name='{self.name}'")
        return sorted(
            (
                VersionInfo(
                    version=str(v.version),
                    aliases=sorted(aliases.get(str(v.version), [])),
                    tags=dict(v.tags or {}),
                    created_at=datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).isoformat(),
                )
                for v in found
            ),
            key=lambda info: int(info.version),
        )

    def alias_version(self, alias: str) -> str | None:
        model = self._model()
        if model is None:
            return None
        version = (model.aliases or {}).get(alias)
        return str(version) if version is not None else None

    def resolve(self, alias_or_version: str) -> str:
        if alias_or_version.isdigit():
            return alias_or_version
        version = self.alias_version(alias_or_version)
        if version is None:
            raise RegistryError(f"{self.name} has no version with alias {alias_or_version!r}")
        return version

    def download(self, version: str) -> Bundle:
        """The bundle of a version, from the local cache or MLflow, checksums verified.

        The cache is keyed by what the version *is* (the registered bundle's manifest
        checksum, else its artifact source), never by its number alone: two registries (staging
        and production, or one re-created) both have a version 2, and must not share it.
        """
        info = self.client.get_model_version(self.name, version)
        expected = (info.tags or {}).get(MANIFEST_TAG)
        identity = expected or hashlib.sha256(str(info.source).encode()).hexdigest()
        cache = Path(self.settings.registry.cache_dir) / self.name / f"{version}-{identity[:16]}"
        if (cache / MANIFEST_FILE).is_file():
            try:
                return self._checked(load_bundle(cache), version, expected)
            except BundleError:
                shutil.rmtree(cache)  # a damaged cache is fetched again
        source = info.source
        staging = cache.with_name(f"{cache.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        path = Path(
            self._mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(staging))
        )
        self._checked(load_bundle(path), version, expected)  # verify before it enters the cache
        shutil.rmtree(cache, ignore_errors=True)
        shutil.move(str(path), str(cache))
        shutil.rmtree(staging, ignore_errors=True)
        return load_bundle(cache)

    def _checked(self, bundle: Bundle, version: str, expected: str | None) -> Bundle:
        """The bundle, if it is the one registered as ``version`` (when that was recorded)."""
        if expected is not None and sha256_file(bundle.path / MANIFEST_FILE) != expected:
            raise BundleError(
                f"{self.name} version {version}: the downloaded bundle is not the one registered "
                "(manifest checksum differs)"
            )
        return bundle

    def compare_on_data(self, candidate: str, data: list[Path]) -> dict[str, Any] | None:
        """The promotion gate's evidence: the candidate and the champion scored on the same
        labelled data (None when there is no other champion to compare with)."""
        from ai_photo_detector.data.discovery import discover
        from ai_photo_detector.evaluation.metrics import safe_auc
        from ai_photo_detector.evaluation.scoring import score_samples
        from ai_photo_detector.model.inference import OnnxDetector, calibrated_probabilities

        champion = self.alias_version(CHAMPION)
        if champion is None or champion == candidate:
            return None
        samples = discover(list(data), self.settings.data.extensions)
        aucs = {}
        for version in (candidate, champion):
            detector = OnnxDetector(self.download(version))
            scored = score_samples(detector, samples)
            manifest = detector.manifest
            truth = (scored.targets(manifest.labels) == manifest.ai_index).astype(int)
            probs = calibrated_probabilities(scored.logits, manifest)[:, manifest.ai_index]
            aucs[version] = safe_auc(truth, probs)
        tolerance = self.settings.registry.auc_tolerance
        return {
            "better_or_equal": aucs[candidate] >= aucs[champion] - tolerance,
            "why": f"ROC-AUC on {len(samples)} images: {aucs[candidate]:.4f} vs "
            f"{aucs[champion]:.4f}",
            "candidate_roc_auc": aucs[candidate],
            "champion_roc_auc": aucs[champion],
        }

    # --- changing ------------------------------------------------------------------------

    def register(self, bundle_dir: Path, actor: str | None = None, reason: str = "") -> str:
        bundle = load_bundle(bundle_dir)
        manifest = bundle.manifest
        if self._model() is None:
            self.client.create_registered_model(self.name)
        self._mlflow.set_experiment(f"{self.name}-registry")
        with self._mlflow.start_run(run_name=f"register {manifest.name} {manifest.version}") as run:
            self._mlflow.log_artifacts(str(bundle.path), artifact_path="bundle")
        tags = {
            MANIFEST_TAG: sha256_file(bundle.path / MANIFEST_FILE),
            "bundle.name": manifest.name,
            "bundle.version": manifest.version,
            "deployable": str(manifest.deployable).lower(),
            "dataset.fingerprint": manifest.dataset.fingerprint,
        }
        for key, value in manifest.metrics.items():
            if isinstance(value, int | float):
                tags[f"metric.{key}"] = f"{value:.6g}"
        created = self.client.create_model_version(
            self.name, source=f"runs:/{run.info.run_id}/bundle", run_id=run.info.run_id, tags=tags
        )
        version = str(created.version)
        self._audit("register", version, "", None, actor, reason, {"bundle": str(bundle.path)})
        return version

    def _history(self) -> list[str]:
        model = self._model()
        raw = (model.tags or {}).get(HISTORY_TAG, "[]") if model is not None else "[]"
        return [str(v) for v in json.loads(raw)]

    def _set_history(self, history: list[str]) -> None:
        self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(history[-50:]))

    def promote(
        self,
        version: str,
        alias: str = CHAMPION,
        *,
        force: bool = False,
        reason: str = "",
        actor: str | None = None,
        comparison: dict[str, Any] | None = None,
    ) -> str | None:
        """Point ``alias`` at ``version`` after the promotion gate; returns the previous one."""
        if version not in {v.version for v in self.versions()}:
            raise RegistryError(f"{self.name} has no version {version}")
        if force and not reason.strip():
            raise RegistryError("a forced promotion needs a reason")
        previous = self.alias_version(alias)
        details: dict[str, Any] = {"forced": force, "comparison": comparison or {}}
        if alias == CHAMPION and previous is not None and previous != version and not force:
            verdict = comparison or self.compare_stored(version, previous)
            details["comparison"] = verdict
            if not verdict["better_or_equal"]:
                raise RegistryError(
                    f"version {version} is worse than champion {previous}: {verdict['why']} "
                    "(use --force --reason to override)"
                )
        self.client.set_registered_model_alias(self.name, alias, version)
        if alias == CHAMPION and previous is not None and previous != version:
            self._set_history([*self._history(), previous])
        self._audit("promote", version, alias, previous, actor, reason, details)
        return previous

    def compare_stored(self, candidate: str, champion: str) -> dict[str, Any]:
        """Compare offline metrics stored with two versions evaluated on the same data."""
        tags = {v.version: v.tags for v in self.versions()}
        a, b = tags[candidate], tags[champion]
        if a.get("dataset.fingerprint") != b.get("dataset.fingerprint"):
            return {
                "better_or_equal": False,
                "why": "they were evaluated on different data; pass --data to evaluate both",
            }
        auc_a, auc_b = float(a.get("metric.roc_auc", "nan")), float(b.get("metric.roc_auc", "nan"))
        ok = auc_a >= auc_b - self.settings.registry.auc_tolerance
        return {
            "better_or_equal": ok,
            "why": f"test ROC-AUC {auc_a:.4f} vs {auc_b:.4f}",
            "candidate_roc_auc": auc_a,
            "champion_roc_auc": auc_b,
        }

    def rollback(self, reason: str = "", actor: str | None = None) -> tuple[str, str]:
        """Champion back to the previous champion; returns (from, to)."""
        history = self._history()
        current = self.alias_version(CHAMPION)
        if not history or current is None:
            raise RegistryError("there is no previous champion to roll back to")
        target = history.pop()
        self.client.set_registered_model_alias(self.name, CHAMPION, target)
        self._set_history(history)
        self._audit("rollback", target, CHAMPION, current, actor, reason, {})
        return current, target

    def remove_alias(self, alias: str, reason: str, actor: str | None = None) -> str | None:
        previous = self.alias_version(alias)
        if previous is not None:
            self.client.delete_registered_model_alias(self.name, alias)
            self._audit("remove_alias", previous, alias, previous, actor, reason, {})
        return previous

    def _audit(
        self,
        action: str,
        version: str,
        alias: str,
        previous: str | None,
        actor: str | None,
        reason: str,
        details: dict[str, Any],
    ) -> None:
        if self.store is None:
            return
        record_event(
            self.store,
            action=action,
            model_name=self.name,
            version=version,
            alias=alias,
            previous=previous,
            actor=actor,
            reason=reason,
            details=details,
        )


@dataclass(frozen=True)
class Resolved:
    bundle: Bundle
    registry_version: str | None  # models:/NAME/VERSION it came from; None for a folder


def resolve_bundle(reference: str, settings: Settings) -> Resolved:
    """A bundle folder or a ``models:/`` reference -> a verified local bundle.

    A reference that resolves is remembered beside the cache; when the registry cannot be
    reached later (a region cut off from it, the tracking server down at start), the bundle it
    last resolved to is served, with a warning, rather than nothing.
    """
    if not reference.startswith(REFERENCE_PREFIX):
        return Resolved(load_bundle(reference), None)
    name, alias = parse_reference(reference)
    try:
        registry = Registry(settings, name=name)
        version = registry.resolve(alias)
        resolved = Resolved(registry.download(version), f"{REFERENCE_PREFIX}{name}/{version}")
    except ImportError as exc:
        raise BundleError("models:/ references need MLflow: pip install '.[registry]'") from exc
    except RegistryError as exc:
        remembered = _remembered(settings, name, alias)
        if remembered is None or "cannot answer" not in str(exc):
            raise BundleError(str(exc)) from exc
        logger.warning(
            "%s; serving the last bundle it resolved to, %s", exc, remembered.registry_version
        )
        return remembered
    _remember(settings, name, alias, resolved)
    return resolved


def _pointer(settings: Settings, name: str, alias: str) -> Path:
    return Path(settings.registry.cache_dir) / name / f"@{alias}.json"


def _remember(settings: Settings, name: str, alias: str, resolved: Resolved) -> None:
    pointer = _pointer(settings, name, alias)
    staged = pointer.with_suffix(".partial")
    staged.write_text(
        json.dumps({"path": str(resolved.bundle.path), "version": resolved.registry_version})
    )
    staged.replace(pointer)


def _remembered(settings: Settings, name: str, alias: str) -> Resolved | None:
    try:
        found = json.loads(_pointer(settings, name, alias).read_text())
        return Resolved(load_bundle(found["path"]), found["version"])
    except (OSError, ValueError, KeyError, BundleError):
        return None

"""The model bundle: the one contract between training and serving.

A bundle is a folder holding ``manifest.json`` and the files the manifest lists with their
SHA-256 checksums: either ``model.onnx`` (a fine-tuned network) or, for a frozen packaged
encoder, only the linear head, the manifest naming the encoder's packaged file, its checksum and
the recipe that builds the served graph from it (:mod:`ai_photo_detector.model.encoders`). Loading
verifies the schema and every checksum, and :meth:`Bundle.graph` checks the built graph against
the probe logits recorded at training, so a truncated, edited or foreign file fails with a
clear :class:`BundleError` instead of serving garbage.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ai_photo_detector.errors import BundleInvalid
from ai_photo_detector.hashing import sha256_file
from ai_photo_detector.image_stats import LEGACY_STATS_BASIS
from ai_photo_detector.imaging import PreprocessSpec
from ai_photo_detector.model.encoders import EncoderError, EncoderRecipe, served_graph
from ai_photo_detector.model.runtimes import Runtime

BUNDLE_FORMAT = "ai-photo-detector-bundle"
SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
DRIFT_FILE = "drift_reference.npz"
HEAD_FILE = "head.npz"
FAMILIARITY_FILE = "familiarity.npz"
REVIEWED_KIND_FILE = "reviewed_kind.npz"


class BundleError(BundleInvalid):
    """A bundle that cannot be used, with a message saying why."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Bands(Strict):
    """Calibrated AI probability p: ``real`` if p < real_below, ``ai`` if p >= ai_from."""

    real_below: float = Field(ge=0, le=1)
    ai_from: float = Field(ge=0, le=1)
    ai_from_reviewed: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Where the 'ai' band starts for photos of the reviewed kind "
        "(reviewed_kind); absent: ai_from for every photo.",
    )

    @model_validator(mode="after")
    def ordered(self) -> Bands:
        if self.real_below > self.ai_from:
            raise ValueError("bands.real_below must not exceed bands.ai_from")
        reviewed = self.ai_from_reviewed
        if reviewed is not None and not self.real_below <= reviewed <= self.ai_from:
            raise ValueError("bands.ai_from_reviewed must lie between real_below and ai_from")
        return self

    def ai_from_for(self, reviewed_kind: bool) -> float:
        """Where the 'ai' band starts for a photo, of the reviewed kind or not."""
        if reviewed_kind and self.ai_from_reviewed is not None:
            return self.ai_from_reviewed
        return self.ai_from


class Calibration(Strict):
    """Fitted on validation: the label threshold meets ``target_fpr`` on real photos; the 'ai'
    band holds at most ``ai_band_fpr`` of real photos and the 'real' band at most
    ``real_band_fnr`` of AI images; between them lies 'uncertain', the share for human review."""

    temperature: float = Field(gt=0)
    threshold: float = Field(ge=0, le=1, description="AI label when p >= threshold.")
    bands: Bands
    target_fpr: float
    ai_band_fpr: float
    reviewed_ai_band_fpr: float | None = Field(
        None, description="What bands.ai_from_reviewed was set at, as ai_from at ai_band_fpr."
    )
    real_band_fnr: float
    validation_fpr: float = Field(
        description="FPR at the threshold on the data calibration was fitted on (fitted_on)."
    )
    validation_tpr: float = Field(
        description="TPR at the threshold on the data calibration was fitted on (fitted_on)."
    )
    fitted_on: Literal["validation", "out_of_source"] = Field(
        "validation",
        description="out_of_source: fitted on predictions of models that never saw the "
        "image's source (leave-one-source-out), so the bands hold on unseen sources.",
    )


class OnnxSpec(Strict):
    input: str = "image"
    outputs: list[str] = ["logits", "features", "embedding"]
    opset: int
    feature_shape: list[int] = Field(description="C, H, W of the last feature map.")
    embedding_size: int
    batch_independent: bool = Field(
        True,
        description="Whether an image's outputs are the same alone and in a batch; a graph "
        "that is not (dynamic quantisation) is run one image at a time.",
    )


class EncoderSpec(Strict):
    """A frozen packaged encoder: the served graph is built from ``recipe`` plus the head."""

    recipe: EncoderRecipe


class Probe(Strict):
    """Logits of :func:`ai_photo_detector.model.encoders.probe_input` through the graph training
    measured; a graph built or loaded later must reproduce them."""

    logits: list[list[float]]
    tolerance: float = Field(1e-3, gt=0)
    fallback_logits: list[list[float]] | None = Field(
        None,
        description="The same input through ONNX Runtime, where the recipe's runtime is "
        "another: what a fallback session must reproduce.",
    )
    # A graph that quantises its activations rounds each one to a coarse grid: kernels of
    # another CPU (other vector widths, other summation orders) move a value across a rounding
    # edge now and then, and the logits then differ by far more than float noise (up to 0.5 on
    # the probe between runtimes on one machine). The embedding's direction stays (cosine
    # >= 0.997), while kernels that compute something else fall far below (0.41 where 8-bit
    # products overflow): such graphs are checked by direction.
    embedding: list[list[float]] | None = Field(
        None, description="The probe's embedding on the recipe's runtime (with min_cosine)."
    )
    fallback_embedding: list[list[float]] | None = Field(
        None, description="The probe's embedding through ONNX Runtime (with min_cosine)."
    )
    min_cosine: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Where set, a loaded graph must reproduce the recorded embedding's "
        "direction to this cosine instead of the logits to ``tolerance``.",
    )


class ExplainSpec(Strict):
    """The linear head, so class activation maps are exact: cam = w_c . features + b_c."""

    head_weight_shape: list[int]
    head_file: str | None = Field(
        None,
        description="The head's weight and bias (npz); absent in bundles exported before it "
        "shipped (`ai-photo-detector optimize` adds it).",
    )


class DatasetInfo(Strict):
    fingerprint: str
    sources: dict[str, dict[str, int]] = Field(description="source -> label -> image count.")
    splits: dict[str, int]
    split_digest: str | None = Field(
        None, description="Which images went to which split (absent from older bundles)."
    )


class DriftReference(Strict):
    scores: list[float] = Field(description="Calibrated AI probabilities on validation images.")
    labels: list[str] = Field(description="Predicted labels on the same images.")
    image_stats: dict[str, list[float]] = Field(description="Per-statistic validation sample.")
    image_stats_basis: str = Field(
        LEGACY_STATS_BASIS,
        description="What the image statistics were measured on; live statistics are compared "
        "only when measured the same way.",
    )
    embedding_file: str = DRIFT_FILE
    size: int


class Familiarity(Strict):
    """How far a photo's embedding may lie from the training embeddings before the answer is
    'uncertain' with reason ``unfamiliar``: the mean distance to its ``k`` nearest training
    embeddings on their principal components (standardised), combined with its distance off
    those components, against a threshold calibrated on validation images. A bundle retrained
    on reviewed feedback also keeps those photos: near them, a photo counts as familiar."""

    file: str = FAMILIARITY_FILE
    k: int = Field(ge=1)
    threshold: float
    quantile: float = Field(description="Share of held-out familiar images below threshold.")


class ReviewedKindSpec(Strict):
    """Which photos are of the kind reviewed feedback taught (model/reviewed_kind.py): a
    logistic score on the embedding at or above ``bound``. They get the 'ai' band from
    ``calibration.bands.ai_from_reviewed``."""

    file: str = REVIEWED_KIND_FILE
    reviewed: int = Field(ge=1, description="Reviewed photos the classifier was fitted on.")
    quantile: float = Field(description="Share of the left-out reviewed photos of the kind.")


class GateResult(Strict):
    passed: bool
    failures: list[str]


class Manifest(Strict):
    format: Literal["ai-photo-detector-bundle"] = "ai-photo-detector-bundle"
    schema_version: Literal[1] = 1
    name: str
    version: str
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    labels: list[str] = Field(min_length=2)
    ai_label: str
    backbone: str
    preprocessing: PreprocessSpec
    calibration: Calibration
    onnx: OnnxSpec
    encoder: EncoderSpec | None = Field(
        None, description="Present when the served graph is built from a packaged encoder."
    )
    probe: Probe | None = Field(None, description="Checks the served graph on every load.")
    familiarity: Familiarity | None = Field(
        None, description="Abstention on photos unlike the training data (absent: never)."
    )
    reviewed_kind: ReviewedKindSpec | None = Field(
        None, description="The reviewed kind and its own 'ai' band (absent: one band for all)."
    )
    explain: ExplainSpec
    metrics: dict[str, Any]
    gates: GateResult
    deployable: bool
    dataset: DatasetInfo
    drift_reference: DriftReference
    training: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(description="File name -> SHA-256 of every bundle file.")

    @model_validator(mode="after")
    def consistent(self) -> Manifest:
        if self.ai_label not in self.labels:
            raise ValueError(f"ai_label {self.ai_label!r} is not one of labels {self.labels}")
        graph_file = HEAD_FILE if self.encoder is not None else MODEL_FILE
        if graph_file not in self.files:
            raise ValueError(f"files must list {graph_file}")
        if self.encoder is not None and self.explain.head_file != HEAD_FILE:
            raise ValueError(f"a packaged-encoder bundle ships its head as {HEAD_FILE}")
        if self.familiarity is not None and self.familiarity.file not in self.files:
            raise ValueError(f"files must list the familiarity reference {self.familiarity.file}")
        kind = self.reviewed_kind
        if kind is not None and kind.file not in self.files:
            raise ValueError(f"files must list the reviewed kind {kind.file}")
        if kind is not None and self.calibration.bands.ai_from_reviewed is None:
            raise ValueError("a reviewed kind needs calibration.bands.ai_from_reviewed")
        return self

    @property
    def ai_index(self) -> int:
        return self.labels.index(self.ai_label)

    @property
    def runtime(self) -> Runtime:
        """The runtime the graph's figures (and its probe) were measured on."""
        return self.encoder.recipe.runtime if self.encoder is not None else "onnxruntime"

    def public(self) -> dict[str, Any]:
        """What clients may see: everything but the bulky drift sample."""
        data = self.model_dump(mode="json", exclude={"drift_reference"})
        data["drift_reference"] = {"size": self.drift_reference.size}
        return data


class Bundle:
    """A verified bundle on disk."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest
        self._head: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None

    @property
    def model_path(self) -> Path:
        """The model file of a fine-tuned bundle (see :meth:`graph` for every kind)."""
        return self.path / MODEL_FILE

    def graph(self) -> str | bytes:
        """What ONNX Runtime loads: the bundle's model file, or the graph built from its
        packaged encoder and head (cached on disk, or bytes where no cache is writable)."""
        if self.manifest.encoder is None:
            return str(self.model_path)
        weight, bias = self.head()
        try:
            return served_graph(self.manifest.encoder.recipe, weight, bias)
        except EncoderError as exc:
            raise BundleError(f"bundle {self.path}: {exc}") from exc

    def check_probe(
        self,
        logits: NDArray[np.float32],
        runtime: str = "onnxruntime",
        embedding: NDArray[np.float32] | None = None,
    ) -> None:
        """Raise :class:`BundleError` unless the probe input's ``logits`` (or, where the probe
        sets ``min_cosine``, its ``embedding``) through the graph loaded on ``runtime`` match
        what training recorded for that runtime."""
        probe = self.manifest.probe
        if probe is None:
            return
        native = runtime == self.manifest.runtime
        recorded = probe.logits if native else probe.fallback_logits
        direction = probe.embedding if native else probe.fallback_embedding
        if recorded is None:
            raise BundleError(
                f"bundle {self.path}: its graph was measured on {self.manifest.runtime} "
                f"and it records no probe for {runtime}"
            )
        if probe.min_cosine is not None and direction is not None and embedding is not None:
            similarity = _cosine(np.asarray(direction, np.float32), embedding)
            if not similarity >= probe.min_cosine:
                raise BundleError(
                    f"bundle {self.path}: the loaded graph does not compute what training "
                    f"measured (probe embedding cosine {similarity:.4f}, under "
                    f"{probe.min_cosine}: on this CPU its kernels compute something else)"
                )
            return
        expected = np.asarray(recorded, dtype=np.float32)
        difference = (
            float(np.abs(expected - logits).max()) if expected.shape == logits.shape else 1e9
        )
        if not difference <= probe.tolerance:
            raise BundleError(
                f"bundle {self.path}: the loaded graph does not compute what training measured "
                f"(probe logits differ by {difference:.2e}, over {probe.tolerance:.0e})"
            )

    def familiarity_reference(self) -> dict[str, NDArray[np.float32]]:
        """Arrays of the familiarity check: ``mean``, ``scale``, ``components``, ``points``,
        and with reviewed feedback ``reviewed`` and ``reviewed_limit``."""
        spec = self.manifest.familiarity
        if spec is None:
            raise BundleError(f"bundle {self.path} has no familiarity reference")
        with np.load(self.path / spec.file) as data:
            found = {name: np.asarray(data[name], dtype=np.float32) for name in data.files}
        missing = {"mean", "scale", "components", "points"} - set(found)
        if missing:
            raise BundleError(f"{spec.file} in {self.path} lacks {sorted(missing)}")
        return found

    def reviewed_kind_arrays(self) -> dict[str, NDArray[np.float32]] | None:
        """Arrays of the reviewed kind's classifier (None where the bundle has none)."""
        spec = self.manifest.reviewed_kind
        if spec is None:
            return None
        with np.load(self.path / spec.file) as data:
            found = {name: np.asarray(data[name], dtype=np.float32) for name in data.files}
        missing = {"mean", "scale", "weights", "bias", "bound", "reviewed", "quantile"} - set(found)
        if missing:
            raise BundleError(f"{spec.file} in {self.path} lacks {sorted(missing)}")
        return found

    def head(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """The linear head's weight (classes x channels) and bias (classes)."""
        if self._head is None:
            self._head = self._load_head()
        return self._head

    def _load_head(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        name = self.manifest.explain.head_file
        if name is None:
            raise BundleError(
                f"bundle {self.path} does not ship its head's weights; "
                f"`ai-photo-detector optimize {self.path}` adds them"
            )
        with np.load(self.path / name) as data:
            weight = np.asarray(data["weight"], dtype=np.float32)
            bias = np.asarray(data["bias"], dtype=np.float32)
        if list(weight.shape) != self.manifest.explain.head_weight_shape or bias.shape != (
            weight.shape[0],
        ):
            raise BundleError(f"{name} in {self.path} does not match explain.head_weight_shape")
        return weight, bias

    def embedding_reference(self) -> NDArray[np.float32]:
        with np.load(self.path / self.manifest.drift_reference.embedding_file) as data:
            return np.asarray(data["embeddings"], dtype=np.float32)


def load_bundle(path: str | Path) -> Bundle:
    """Read and verify a bundle folder; raise :class:`BundleError` saying what is wrong."""
    folder = Path(path)
    if folder.is_file() and folder.name == MANIFEST_FILE:
        folder = folder.parent
    if not folder.is_dir():
        raise BundleError(f"model bundle not found: {folder} is not a folder")
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"{folder} is not a model bundle: it has no {MANIFEST_FILE}")
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(
            f"{manifest_path} is not valid JSON ({exc}); truncated or foreign?"
        ) from exc
    if not isinstance(raw, dict) or raw.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path} is not an ai-photo-detector bundle manifest")
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(
            f"{manifest_path} has schema_version {raw.get('schema_version')!r}; "
            f"this release reads version {SCHEMA_VERSION}"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise BundleError(f"{manifest_path} does not match the bundle schema: {problems}") from exc
    for name, expected in manifest.files.items():
        file_path = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"bundle file name {name!r} leaves the bundle folder")
        if not file_path.is_file():
            raise BundleError(f"bundle file {name} is missing from {folder}")
        actual = sha256_file(file_path)
        if actual != expected:
            raise BundleError(
                f"checksum mismatch for {name} in {folder}: the file is truncated or altered "
                f"(expected sha256 {expected[:12]}…, found {actual[:12]}…)"
            )
    return Bundle(folder, manifest)


def write_manifest(folder: Path, manifest_fields: dict[str, Any]) -> Manifest:
    """Checksum every file in ``folder`` (but the manifest), then write a validated manifest."""
    files = {
        item.name: sha256_file(item)
        for item in sorted(folder.iterdir())
        if item.is_file() and item.name != MANIFEST_FILE
    }
    manifest = Manifest.model_validate({**manifest_fields, "files": files})
    (folder / MANIFEST_FILE).write_text(
        json.dumps(manifest.model_dump(mode="json"), indent=1) + "\n", encoding="utf-8"
    )
    return manifest


def _cosine(expected: NDArray[np.float32], found: NDArray[np.float32]) -> float:
    """The smallest row-wise cosine of two equally shaped arrays (0 when the shapes differ)."""
    if expected.shape != found.shape:
        return 0.0
    norms = np.linalg.norm(expected, axis=-1) * np.linalg.norm(found, axis=-1)
    return float(np.min(np.sum(expected * found, axis=-1) / np.maximum(norms, 1e-12)))

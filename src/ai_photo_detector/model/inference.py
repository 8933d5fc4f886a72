"""Inference on a bundle (ONNX Runtime or OpenVINO), and the calibrated verdict built from its
logits.

Used by the command line, evaluation and the service alike; imports neither torch nor the
training code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from ai_photo_detector.evidence.provenance import Provenance
from ai_photo_detector.model.bundle import Bundle, BundleError, Manifest
from ai_photo_detector.model.encoders import forget_cached, probe_input
from ai_photo_detector.model.familiarity import FamiliarityReference
from ai_photo_detector.model.reviewed_kind import ReviewedKind
from ai_photo_detector.model.runtimes import (
    GraphSession,
    Runtime,
    Spinning,
    available_cpus,
    make_session,
    open_session,
)

logger = logging.getLogger(__name__)

# Why an answer is 'uncertain': its probability lies between the bands (low_margin), or the
# photo is unlike the training data, where no probability is worth trusting (unfamiliar).
LOW_MARGIN, UNFAMILIAR = "low_margin", "unfamiliar"
# Why an answer is 'ai' whatever the model says: the file's trusted Content Credentials.
PROVENANCE = "provenance"
# Why an answer is 'ai' below where the band starts for other photos: the photo is of the kind
# reviewed feedback taught, whose band starts lower (bands.ai_from_reviewed).
REVIEWED_KIND = "reviewed_kind"


@dataclass(frozen=True)
class Verdict:
    label: str
    band: str
    probability: float  # calibrated probability of the AI label
    scores: dict[str, float]  # calibrated probability per label
    reasons: tuple[str, ...] = ()  # why the band is 'uncertain'; empty otherwise
    model_label: str | None = None  # the model's own label where a policy answered otherwise


@dataclass
class BatchOutput:
    logits: NDArray[np.float32]
    embedding: NDArray[np.float32]
    features: NDArray[np.float32] | None = None


def softmax(logits: NDArray[np.floating], temperature: float = 1.0) -> NDArray[np.float64]:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    result: NDArray[np.float64] = exp / exp.sum(axis=-1, keepdims=True)
    return result


def class_activation_maps(
    features: NDArray[np.float32], weight: NDArray[np.float32], bias: NDArray[np.float32]
) -> NDArray[np.float32]:
    """Each class's logit position by position: ``cam[n, k] = weight[k] . features[n] + bias[k]``
    over the (N, C, H, W) feature map, giving (N, K, H, W).

    The head is linear on the average of the feature map, so each map's mean is exactly that
    class's logit: the maps explain the verdict, they do not approximate it.
    """
    maps: NDArray[np.float32] = np.einsum("kc,nchw->nkhw", weight, features, optimize=True)
    maps += bias[None, :, None, None]
    return maps


def calibrated_probabilities(
    logits: NDArray[np.floating], manifest: Manifest
) -> NDArray[np.float64]:
    return softmax(logits, manifest.calibration.temperature)


def band_of(probability: float, manifest: Manifest, reviewed_kind: bool = False) -> str:
    """The band of a calibrated AI probability; a photo of the reviewed kind (a retrained
    bundle's ``reviewed_kind``) meets the 'ai' band where ``bands.ai_from_reviewed`` puts it."""
    bands = manifest.calibration.bands
    if probability >= bands.ai_from_for(reviewed_kind):
        return "ai"
    if probability < bands.real_below:
        return "real"
    return "uncertain"


def decide_label(
    probs: NDArray[np.floating], ai_index: int, threshold: float, labels: list[str]
) -> str:
    """The AI label at or above the threshold, else the most probable other label."""
    if float(probs[ai_index]) >= threshold:
        return labels[ai_index]
    others = np.asarray(probs, dtype=np.float64).copy()
    others[ai_index] = -1.0
    return labels[int(np.argmax(others))]


def verdicts(
    logits: NDArray[np.floating],
    manifest: Manifest,
    unfamiliar: Sequence[bool] | NDArray[np.bool_] | None = None,
    reviewed_kind: Sequence[bool] | NDArray[np.bool_] | None = None,
) -> list[Verdict]:
    """Label, band, calibrated scores and reasons for each row of logits.

    The AI label wins when its probability reaches the calibrated threshold; otherwise the most
    probable of the other labels is given, so multi-class bundles work unchanged. A row flagged
    ``unfamiliar`` keeps its label (the model's best guess) but its band is 'uncertain'; a row
    flagged ``reviewed_kind`` gets the reviewed kind's 'ai' band (:func:`band_of`).
    """
    probs = calibrated_probabilities(logits, manifest)
    ai = manifest.ai_index
    labels = manifest.labels
    flags = [False] * len(probs) if unfamiliar is None else [bool(f) for f in unfamiliar]
    kinds = [False] * len(probs) if reviewed_kind is None else [bool(f) for f in reviewed_kind]
    results = []
    for row, strange, of_kind in zip(probs, flags, kinds, strict=True):
        p_ai = float(row[ai])
        band = band_of(p_ai, manifest, of_kind)
        reasons = ((LOW_MARGIN,) if band == "uncertain" else ()) + (
            (UNFAMILIAR,) if strange else ()
        )
        if band == "ai" and not strange and p_ai < manifest.calibration.bands.ai_from:
            reasons = (REVIEWED_KIND,)
        results.append(
            Verdict(
                label=decide_label(row, ai, manifest.calibration.threshold, labels),
                band="uncertain" if strange else band,
                probability=p_ai,
                scores={name: float(value) for name, value in zip(labels, row, strict=True)},
                reasons=reasons,
            )
        )
    return results


def with_provenance(verdict: Verdict, provenance: Provenance | None, ai_label: str) -> Verdict:
    """The verdict, unless the file's C2PA manifest is decisive (valid, from a trusted signer,
    declaring generative AI, policy on): then 'ai', for that reason alone. The probability
    scores and the model's own label stay, so the log and the monitoring still see what it
    said."""
    c2pa = provenance.c2pa if provenance is not None else None
    if c2pa is None or not c2pa.decisive:
        return verdict
    return replace(
        verdict, label=ai_label, band="ai", reasons=(PROVENANCE,), model_label=verdict.label
    )


@dataclass(frozen=True)
class FamiliarityCheck:
    reference: FamiliarityReference
    threshold: float

    def flags(self, embeddings: NDArray[np.floating]) -> NDArray[np.bool_]:
        result: NDArray[np.bool_] = self.reference.ratios(embeddings, self.threshold) > 1
        return result


class ImageLanes:
    """Single-threaded sessions side by side, each running its share of a batch one image at a
    time: how a graph whose output for an image depends on its batch (dynamic quantisation)
    still uses every core on a batch. On 2 cores, two one-thread lanes gave 56-57 images/s of
    the CLIP bundle where one two-thread session gave 43-51 (small operators do not split well
    across threads)."""

    def __init__(self, graph: str | bytes, count: int, spinning: Spinning) -> None:
        self.sessions: list[GraphSession] = [
            make_session(graph, 1, 1, spinning) for _ in range(count)
        ]
        self.pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="lane")

    def run(
        self, names: list[str], input_name: str, batch: NDArray[np.float32]
    ) -> list[NDArray[np.float32]]:
        lanes = min(len(self.sessions), len(batch))

        def lane(index: int) -> list[tuple[int, list[NDArray[np.float32]]]]:
            session = self.sessions[index]
            return [
                (i, session.run(names, {input_name: batch[i : i + 1]}))
                for i in range(index, len(batch), lanes)
            ]

        done = dict(pair for part in self.pool.map(lane, range(lanes)) for pair in part)
        return [
            np.concatenate(parts)
            for parts in zip(*(done[i] for i in range(len(batch))), strict=True)
        ]


class OnnxDetector:
    """One loaded bundle and its session (plus image lanes for batches, where the graph must see
    one image at a time). The session runs on the runtime the bundle's recipe names (ONNX
    Runtime for bundles without one), or on ONNX Runtime where that runtime is not installed."""

    def __init__(
        self,
        bundle: Bundle,
        intra_op_threads: int = 0,
        inter_op_threads: int = 1,
        spinning: Spinning = "always",
        lanes: bool = True,
        runtime: Runtime | None = None,
    ):
        """``lanes=False`` for a detector that only ever runs one image at a time; ``runtime``
        instead of the one the bundle's recipe names (checked against its own probe)."""
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.input_name = self.manifest.onnx.input
        self.batch_independent = self.manifest.onnx.batch_independent
        self.lanes: ImageLanes | None = None
        wanted = runtime or self.manifest.runtime
        threads = (intra_op_threads, inter_op_threads, spinning)
        graph = bundle.graph()
        try:
            self._open(graph, wanted, threads)
        except Exception:
            if self.manifest.encoder is None:
                raise
            # A built graph from the cache that does not load or compute what training
            # measured is rebuilt once from the package file; a second failure is the bundle's.
            forget_cached(graph)
            graph = bundle.graph()
            self._open(graph, wanted, threads)
        if lanes and not self.batch_independent:
            self.lanes = ImageLanes(graph, intra_op_threads or available_cpus(), spinning)
        self.familiarity: FamiliarityCheck | None = None
        if self.manifest.familiarity is not None:
            reference = FamiliarityReference.from_arrays(
                bundle.familiarity_reference(), self.manifest.familiarity.k
            )
            self.familiarity = FamiliarityCheck(reference, self.manifest.familiarity.threshold)
        kind = bundle.reviewed_kind_arrays()
        self.reviewed_kind = ReviewedKind.from_arrays(kind) if kind is not None else None

    def _open(
        self, graph: str | bytes, wanted: Runtime, threads: tuple[int, int, Spinning]
    ) -> None:
        """A session on ``wanted`` that reproduces its probe; where another runtime than ONNX
        Runtime does not (its kernels differ on this CPU), ONNX Runtime and its own probe."""
        self.session, self.runtime = open_session(graph, wanted, *threads)
        try:
            self._check_probe()
        except BundleError:
            probe = self.manifest.probe
            if self.runtime == "onnxruntime" or probe is None or probe.fallback_logits is None:
                raise
            logger.warning(
                "%s does not reproduce this bundle's probe on this CPU: running it on ONNX "
                "Runtime, whose probe was recorded too",
                self.runtime,
            )
            self.session, self.runtime = open_session(graph, "onnxruntime", *threads)
            self._check_probe()

    @property
    def spins(self) -> bool:
        """Whether the session has ONNX Runtime's busy-waiting threads (OpenVINO's do not)."""
        return self.runtime == "onnxruntime"

    def _check_probe(self) -> None:
        if self.manifest.probe is not None:
            probe = probe_input(self.manifest.preprocessing.input_size)
            output = self.run(probe)
            self.bundle.check_probe(output.logits, self.runtime, output.embedding)

    def unfamiliar(self, embeddings: NDArray[np.floating]) -> NDArray[np.bool_]:
        """Which embeddings lie too far from the training data (none, without a reference)."""
        if self.familiarity is None:
            return np.zeros(len(np.atleast_2d(embeddings)), bool)
        return self.familiarity.flags(embeddings)

    def of_reviewed_kind(self, embeddings: NDArray[np.floating]) -> NDArray[np.bool_]:
        """Which embeddings are of the kind reviewed feedback taught (none, without one)."""
        if self.reviewed_kind is None:
            return np.zeros(len(np.atleast_2d(embeddings)), bool)
        return self.reviewed_kind.flags(embeddings)

    def verdicts(
        self, output: BatchOutput, provenance: Sequence[Provenance | None] | None = None
    ) -> list[Verdict]:
        """The calibrated verdicts; with each image's ``provenance``, after the C2PA policy
        (:func:`with_provenance`): the one place it is applied."""
        found = verdicts(
            output.logits,
            self.manifest,
            self.unfamiliar(output.embedding),
            self.of_reviewed_kind(output.embedding),
        )
        if provenance is None:
            return found
        ai_label = self.manifest.labels[self.manifest.ai_index]
        return [
            with_provenance(verdict, evidence, ai_label)
            for verdict, evidence in zip(found, provenance, strict=True)
        ]

    def run(self, batch: NDArray[np.float32], with_features: bool = False) -> BatchOutput:
        names = ["logits", "embedding"] + (["features"] if with_features else [])
        if self.lanes is None or len(batch) == 1:
            outputs = self.session.run(names, {self.input_name: batch})
        else:  # one image per run: the graph's answer for an image must not depend on others
            outputs = self.lanes.run(names, self.input_name, batch)
        return BatchOutput(
            logits=np.asarray(outputs[0], dtype=np.float32),
            embedding=np.asarray(outputs[1], dtype=np.float32),
            features=np.asarray(outputs[2], dtype=np.float32) if with_features else None,
        )

    def warm_up(self) -> None:
        size = self.manifest.preprocessing.input_size
        images = 1 if self.lanes is None else len(self.lanes.sessions)  # every lane warmed
        self.run(np.zeros((images, 3, size, size), dtype=np.float32))

    def close(self) -> None:
        """Let the lanes' threads go (the sessions go with the detector)."""
        if self.lanes is not None:
            self.lanes.pool.shutdown(wait=False)

"""The server's glue to the contract: scored images as response fields, and the error
answers each route documents in OpenAPI."""

from __future__ import annotations

from typing import Any

from ai_photo_detector.contract.schemas import (
    ContentCredentials,
    ErrorResponse,
    Evidence,
    ImageMeta,
    ModelRef,
    ProvenanceEvidence,
    Timing,
)
from ai_photo_detector.serving.predictor import ScoredImage


def prediction_fields(image: ScoredImage) -> dict[str, Any]:
    """A scored image as the fields of :class:`Prediction`, already valid (the core built
    them): for ``model_construct``, which does not validate them again."""
    return {
        "prediction_id": image.prediction_id,
        "label": image.label,
        "band": image.band,
        "probability": image.probability,
        "scores": image.scores,
        "reasons": image.reasons,
        "model": ModelRef.model_construct(name=image.model_name, version=image.model_version),
        "timing": Timing.model_construct(**vars(image.timing)),
        "image": ImageMeta.model_construct(**vars(image.image)),
        "evidence": Evidence.model_construct(provenance=_provenance(image.provenance)),
    }


def _provenance(found: dict[str, Any] | None) -> ProvenanceEvidence | None:
    if found is None:
        return None
    c2pa = found.get("c2pa")
    return ProvenanceEvidence.model_construct(
        **{**found, "c2pa": ContentCredentials.model_construct(**c2pa) if c2pa else None}
    )


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Bad request (empty body, bad form).",
        401: "Missing or invalid API key.",
        403: "The API key lacks the needed scope.",
        404: "Not found.",
        406: "The results format asked for is not available here.",
        409: "The model cannot do this (an explanation from a bundle without its head), or "
        "the job is over, or an idempotency key was reused for another request.",
        413: "Body or image too large.",
        415: "Not an accepted image format.",
        422: "Corrupt, truncated or too small image, or invalid request.",
        429: "Rate limited (see Retry-After), or the key's job limits are reached.",
        503: "Overloaded or not ready; see Retry-After.",
    }
    return {s: {"model": ErrorResponse, "description": descriptions[s]} for s in statuses}

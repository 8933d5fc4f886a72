"""Response models: the documented shape of every answer, errors included."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable error code.", examples=["corrupt_image"])
    message: str = Field(description="What went wrong, for people.")
    request_id: str = Field(description="The request id, also in the X-Request-ID header.")


class ErrorResponse(BaseModel):
    error: ErrorBody


class ModelRef(BaseModel):
    name: str
    version: str


class Timing(BaseModel):
    queue_ms: float = Field(description="Waiting for a micro-batch.")
    preprocess_ms: float = Field(description="Decode and preprocess.")
    inference_ms: float = Field(description="Model inference of the batch.")


class ImageMeta(BaseModel):
    width: int
    height: int
    format: str
    bytes: int
    sha256: str


class Prediction(BaseModel):
    label: str = Field(description="Predicted label.")
    band: str = Field(description="real, uncertain or ai: confidence band of the AI probability.")
    probability: float = Field(description="Calibrated probability that the image is AI-made.")
    scores: dict[str, float] = Field(description="Calibrated probability per label.")
    model: ModelRef
    timing: Timing
    image: ImageMeta


class PredictResponse(Prediction):
    request_id: str


class BatchItem(BaseModel):
    index: int = Field(description="Position of the file in the request.")
    filename: str | None = None
    result: Prediction | None = None
    error: ErrorBody | None = None


class BatchResponse(BaseModel):
    request_id: str
    model: ModelRef
    results: list[BatchItem]
    succeeded: int
    failed: int


class ModelSummary(BaseModel):
    name: str
    version: str
    ready: bool
    labels: list[str]
    deployable: bool


class ModelList(BaseModel):
    models: list[ModelSummary]
    default: str | None


class ModelDetail(BaseModel):
    name: str
    version: str
    ready: bool
    manifest: dict[str, Any] = Field(description="Public part of the bundle manifest.")


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class OipModelMetadata(BaseModel):
    """Open Inference Protocol model metadata."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]


class OipModelReady(BaseModel):
    name: str
    ready: bool


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Bad request (empty body, bad form).",
        401: "Missing or invalid API key.",
        403: "The API key lacks the needed scope.",
        404: "Not found.",
        413: "Body or image too large.",
        415: "Not an accepted image format.",
        422: "Corrupt, truncated or too small image, or invalid request.",
        429: "Rate limited; see Retry-After.",
        503: "Overloaded or not ready; see Retry-After.",
    }
    return {s: {"model": ErrorResponse, "description": descriptions[s]} for s in statuses}

"""Request and response models of /v1: the documented shape of every answer, errors included."""

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


class ContentCredentials(BaseModel):
    present: bool = Field(False, description="A C2PA manifest store was read.")
    validation: str | None = Field(
        None,
        description="valid or invalid: whether signature and content hashes hold (null when "
        "it could not be verified: see error).",
    )
    trusted: bool = Field(
        False, description="The signer chains to a trust anchor the operator configured."
    )
    tampered: bool = Field(
        False,
        description="Validation failed: the file or its manifest changed after signing. "
        "Reported only; it changes nothing else.",
    )
    failures: list[str] = Field(
        default_factory=list,
        description="C2PA status codes of what failed, e.g. assertion.dataHash.mismatch, "
        "claimSignature.mismatch, signingCredential.untrusted.",
    )
    claim_generator: str | None = Field(None, description="The software that made the manifest.")
    signer: str | None = Field(None, description="Common name of the signing certificate.")
    issuer: str | None = Field(None, description="Its organisation, as the manifest says.")
    digital_source_type: str | None = Field(
        None, description="IPTC digital source type the active manifest declares."
    )
    ai_declared: bool = Field(
        False, description="The active manifest declares generative AI (trainedAlgorithmicMedia…)."
    )
    decisive: bool = Field(
        False,
        description="Valid, trusted and declaring AI, with the policy on: the verdict is ai "
        "for this reason ('provenance' in reasons).",
    )
    error: str | None = Field(None, description="Why the manifest could not be read or verified.")


class ProvenanceEvidence(BaseModel):
    digital_source_type: str | None = Field(
        None, description="IPTC digital source type from the XMP, e.g. trainedAlgorithmicMedia."
    )
    ai_declared: bool = Field(
        False,
        description="The metadata itself says generative AI made it (unsigned: shown, "
        "never acted on).",
    )
    generator: str | None = Field(None, description="A recognised generator, if one is named.")
    software: str | None = Field(None, description="EXIF Software (or a PNG Software chunk).")
    camera: str | None = Field(None, description="EXIF Make and Model.")
    text_chunks: list[str] = Field(
        default_factory=list, description="PNG text keys found (parameters, prompt, workflow…)."
    )
    c2pa: ContentCredentials | None = Field(
        None, description="Signed C2PA Content Credentials, when the file embeds a manifest."
    )


class Evidence(BaseModel):
    provenance: ProvenanceEvidence | None = Field(
        None,
        description="What the file's metadata says of its origin. Present, strong evidence for "
        "a reviewer; absent, it proves nothing. Only trusted C2PA Content Credentials that "
        "declare AI change the verdict (see c2pa.decisive).",
    )


class Prediction(BaseModel):
    prediction_id: str = Field(description="Id of the logged prediction, for feedback.")
    label: str = Field(description="Predicted label.")
    band: str = Field(description="real, uncertain or ai: confidence band of the AI probability.")
    probability: float = Field(description="Calibrated probability that the image is AI-made.")
    scores: dict[str, float] = Field(description="Calibrated probability per label.")
    reasons: list[str] = Field(
        default_factory=list,
        description="Why the band is 'uncertain': low_margin (the probability "
        "lies between the bands) and/or unfamiliar (the photo is unlike the training data, so "
        "no probability is trustworthy); or why it is 'ai' whatever the model says: provenance "
        "(trusted C2PA Content Credentials declare generative AI); or why it is 'ai' at a "
        "probability below where other photos' 'ai' band starts: reviewed_kind (the photo is of "
        "the kind a retrain on reviewed feedback learned, whose band starts lower). Empty "
        "otherwise.",
        examples=[["unfamiliar"]],
    )
    model: ModelRef
    timing: Timing
    image: ImageMeta
    evidence: Evidence = Field(default_factory=Evidence, description="Evidence beside the model.")


class PredictResponse(Prediction):
    request_id: str


class Explanation(BaseModel):
    method: str = Field("class_activation_map", description="How the evidence was computed.")
    target: str = Field(description="The label explained: the model's AI label.")
    against: str = Field(description="The most probable other label.")
    grid: list[list[float]] = Field(
        description="Evidence per region of the model's view (rows top to bottom): what each "
        "region adds to logit(target) - logit(against). Positive pushes towards the target."
    )
    margin: float = Field(
        description="Mean of the grid, exactly logit(target) - logit(against): the head is "
        "linear on the average of the feature map."
    )
    overlay_jpeg: str | None = Field(
        None,
        description="Base64 JPEG of the model's view (the resized centre crop) with the evidence "
        "laid over it: red towards the target, blue against; null when overlay=false.",
    )


class ExplainResponse(PredictResponse):
    explanation: Explanation


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
    reference: str | None = Field(
        None, description="The registry reference it follows (models:/NAME@ALIAS), if any."
    )
    registry_version: str | None = Field(
        None, description="The registry version it was resolved to (models:/NAME/VERSION)."
    )


class ModelList(BaseModel):
    models: list[ModelSummary]
    default: str | None


class ModelDetail(BaseModel):
    name: str
    version: str
    ready: bool
    reference: str | None = None
    registry_version: str | None = None
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


class FeedbackIn(BaseModel):
    prediction_id: str = Field(min_length=1, max_length=32, description="From a prediction.")
    label: str = Field(min_length=1, max_length=64, description="The reviewer's verdict.")
    source: str = Field("reviewer", min_length=1, max_length=64, description="Who reviewed.")


class FeedbackOut(BaseModel):
    prediction_id: str
    label: str
    source: str
    created: bool = Field(description="False when this source had already given a verdict.")
    updated: bool = Field(description="True when the source changed its verdict.")
    predicted_label: str
    model: ModelRef


class LiveAccuracyItem(BaseModel):
    model: ModelRef
    count: int
    accuracy: float
    precision: float | None
    recall: float | None
    labels: list[str]
    confusion: list[list[int]] = Field(description="Rows: reviewed label; columns: predicted.")


class LiveAccuracyResponse(BaseModel):
    window_hours: float
    models: list[LiveAccuracyItem]


class DriftEntry(BaseModel):
    id: int
    created_at: str
    model: ModelRef
    window: str
    size: int
    drift: bool
    severity: str
    report: dict[str, Any]


class DriftResponse(BaseModel):
    latest: list[DriftEntry] = Field(description="Newest report per model version and window.")
    history: list[DriftEntry]


class DriftRunResponse(BaseModel):
    reports: list[DriftEntry]


class AlertmanagerAlert(BaseModel):
    status: str = Field(max_length=16)
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    startsAt: str = Field("", max_length=64)
    fingerprint: str = Field("", max_length=64)


class AlertmanagerWebhook(BaseModel):
    """Alertmanager's webhook payload (version 4); unknown fields are ignored."""

    status: str = Field("firing", max_length=16)
    alerts: list[AlertmanagerAlert] = Field(max_length=1000)


class AlertsRecorded(BaseModel):
    recorded: int
    retrain: str | None = Field(
        None,
        description="started or skipped when the alerts call for a retrain "
        "(retraining.on_alert); None otherwise.",
    )


class ReloadResponse(BaseModel):
    reloaded: dict[str, dict[str, str | None]] = Field(
        description="Per role: the bundle version before and after ('from', 'to') and the "
        "registry versions where they came from a registry ('from_registry', 'to_registry')."
    )


class RolloutUpdate(BaseModel):
    canary_weight: float | None = Field(None, ge=0, le=1)
    shadow_fraction: float | None = Field(None, ge=0, le=1)
    challenger: str | None = Field(
        None,
        max_length=1000,
        description="Load this challenger (bundle or models:/…); '' removes it.",
    )


class RolloutStatus(BaseModel):
    champion: dict[str, str | None] | None
    challenger: dict[str, str | None] | None
    canary: dict[str, Any]
    shadow: dict[str, Any]
    challenger_stats: dict[str, Any]


class ShadowReport(BaseModel):
    window_hours: float
    pairs: list[dict[str, Any]]


class JobLinks(BaseModel):
    self: str
    results: str


class CallbackAttemptOut(BaseModel):
    number: int
    at: str
    status_code: int | None = Field(description="The receiver's answer; null when none came.")
    error: str | None = Field(description="Why it failed: a status, a timeout, a refusal.")
    duration_ms: float


class CallbackOut(BaseModel):
    url: str
    status: str = Field(
        description="waiting (the job runs), pending (owed, being tried), delivered, or failed "
        "(given up after webhooks.give_up_after_s)."
    )
    attempts: list[CallbackAttemptOut]


class JobStatus(BaseModel):
    id: str
    status: str = Field(description="queued, running, done or cancelled.")
    source: str = Field(description="zip, tar or manifest.")
    model: str = Field(description="The model the job's images are scored with.")
    total: int = Field(description="Images in the job.")
    done: int = Field(description="Images scored.")
    failed: int = Field(description="Images answered with an error row.")
    created_at: str
    started_at: str | None
    finished_at: str | None
    rate_per_s: float | None = Field(description="Images per second since the job started.")
    eta_s: float | None = Field(description="Seconds left at that rate (None when unknown).")
    links: JobLinks
    callback: CallbackOut | None = Field(
        None, description="The webhook the job carries, and every delivery attempt."
    )


class JobEvent(BaseModel):
    """The body of a job webhook, signed in the X-APD-Signature header."""

    id: str = Field(description="Unique per event: a receiver may drop repeats by it.")
    type: str = Field(description="job.done or job.cancelled.")
    created_at: str = Field(description="When the job finished.")
    job: JobStatus


class JobList(BaseModel):
    jobs: list[JobStatus]


class ResultError(BaseModel):
    code: str
    message: str


class JobResultRow(BaseModel):
    """One row of a job's JSON-lines results: the fields of /v1/predict, or an error."""

    item: int = Field(description="The image's place in the job.")
    name: str = Field(description="Its name in the archive or manifest.")
    label: str | None = None
    band: str | None = None
    probability: float | None = None
    scores: dict[str, float] | None = None
    reasons: list[str] = Field(default_factory=list)
    model: ModelRef | None = None
    image: dict[str, Any] | None = None
    error: ResultError | None = None

"""Response bodies of /v1/ops (the operations view); all read-only."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from ai_photo_detector.contract.review import NextRetrainOut
from ai_photo_detector.contract.schemas import (
    DriftResponse,
    ModelList,
    ModelRef,
    RolloutStatus,
)


class OpsWindow(BaseModel):
    days: int
    bucket: Literal["hour", "day"]
    start: datetime = Field(description="Start of the first bucket (UTC).")
    end: datetime = Field(description="End of the last bucket, the one holding now (UTC).")


class AccuracyPoint(BaseModel):
    start: datetime = Field(description="Start of the bucket the predictions were made in.")
    reviewed: int = Field(description="Predictions of the bucket with a reviewer's verdict.")
    correct: int = Field(description="Of those, how many the latest verdict agrees with.")
    accuracy: float


class AccuracySeries(BaseModel):
    model: ModelRef
    reviewed: int = Field(description="Reviewed predictions in the whole window.")
    accuracy: float = Field(description="Accuracy over the whole window.")
    points: list[AccuracyPoint] = Field(description="Buckets with reviews only, oldest first.")


class AccuracyOverTime(BaseModel):
    window: OpsWindow
    series: list[AccuracySeries] = Field(description="One per model version; empty: no reviews.")


class BandBucket(BaseModel):
    start: datetime
    total: int = Field(description="Answers of the primary route in the bucket.")
    bands: dict[str, int] = Field(description="Answers per band: ai, real, uncertain.")
    reasons: dict[str, int] = Field(description="Answers listing each reason.")
    reason_shares: dict[str, float] = Field(
        description="Each reason's share of the bucket's answers (an answer may list two)."
    )


class BandsOverTime(BaseModel):
    window: OpsWindow
    buckets: list[BandBucket] = Field(description="Buckets with answers only, oldest first.")


class OpsAlert(BaseModel):
    received_at: datetime
    name: str
    status: str = Field(description="firing or resolved.")
    severity: str
    starts_at: str
    fingerprint: str
    summary: str | None = Field(None, description="The summary annotation, if any.")
    labels: dict[str, Any]
    annotations: dict[str, Any]


class AlertList(BaseModel):
    alerts: list[OpsAlert] = Field(description="Newest first.")
    loop: RetrainingLoop | None = Field(
        None, description="The review-to-retrain loop: new kinds of photo, reviews, challenger."
    )


class SourceFigures(BaseModel):
    """One row of a model's own evaluation by source (its training run's report)."""

    source: str
    fit: str = Field(
        description="held_out: scored by a head trained without the source; cross_fitted: "
        "reviewed feedback, each part scored by a head trained on the rest of it."
    )
    count: int
    roc_auc: float | None
    ai_band_tpr: float | None = Field(description="Share of its AI photos in the 'ai' band.")
    ai_band_fpr: float | None = Field(description="Share of its real photos in the 'ai' band.")
    uncertain_share: float | None


class LoopModel(BaseModel):
    model: ModelRef
    role: str = Field(description="champion, challenger, shadow or canary.")
    feedback: list[SourceFigures] = Field(
        description="Its figures on the reviewed feedback it was retrained on (empty: a model "
        "trained without feedback)."
    )


class RetrainingLoop(BaseModel):
    """Where a new kind of photo shows, how much of it is reviewed, what retraining made of it."""

    unfamiliar_share: float | None = Field(
        description="Share of the window's answers flagged unfamiliar (unlike the training "
        "data): a new kind of photo shows here first."
    )
    unfamiliar_share_latest: float | None = Field(description="The same, in the latest bucket.")
    reviewed_kind_share: float | None = Field(
        None,
        description="Share of the window's answers put in the 'ai' band by a retrained model's "
        "band for the reviewed kind (reason reviewed_kind): what the reviews now catch.",
    )
    reviewed_kind_share_latest: float | None = Field(
        None, description="The same, in the latest bucket."
    )
    waiting: dict[str, int] = Field(
        description="Review queue items waiting per kind (a count at the queue's count limit "
        "means at least that many)."
    )
    next_retrain: NextRetrainOut
    models: list[LoopModel] = Field(description="Each loaded model, with its feedback figures.")


class OpsOverview(BaseModel):
    generated_at: datetime
    window: OpsWindow
    accuracy: list[AccuracySeries]
    bands: list[BandBucket]
    drift: DriftResponse = Field(
        description="As GET /v1/drift answers: the latest report per model version and window."
    )
    models: ModelList = Field(description="As GET /v1/models answers; default is the answerer.")
    rollout: RolloutStatus = Field(description="As GET /v1/rollout answers.")
    alerts: list[OpsAlert] = Field(description="Newest first.")
    loop: RetrainingLoop | None = Field(
        None, description="The review-to-retrain loop: new kinds of photo, reviews, challenger."
    )

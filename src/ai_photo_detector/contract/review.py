"""Request and response bodies of /v1/review (the reviewer's queue)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from ai_photo_detector.contract.schemas import (
    ModelRef,
)

Kind = Literal["uncertain", "disagreement", "sample"]


class ReviewFilter(BaseModel):
    model: str | None = Field(None, max_length=128, description="Only this model's answers.")
    band: Literal["ai", "real", "uncertain"] | None = None
    reason: str | None = Field(None, max_length=32, description="e.g. low_margin, unfamiliar.")
    kind: Kind | None = Field(None, description="Only this part of the queue.")
    since: datetime | None = None
    until: datetime | None = None


class ShadowAnswer(BaseModel):
    model: ModelRef
    label: str
    band: str
    score: float


class ReviewItemOut(BaseModel):
    prediction_id: str
    kind: Kind = Field(description="Why it is queued: uncertain, shadow disagreement, QC sample.")
    created_at: datetime
    model: ModelRef
    label: str
    band: str
    score: float
    reasons: list[str]
    width: int
    height: int
    format: str
    image_url: str | None = Field(description="The retained upload, when still kept.")
    provenance: dict[str, Any] | None = None
    shadow: ShadowAnswer | None = None
    lease_expires_at: datetime | None = None


class NextRetrainOut(BaseModel):
    """What ``ai-photo-detector retrain`` would take from the reviews now."""

    photos: int = Field(description="Reviewed photos in the retraining window, upload kept.")
    from_uncertain: int = Field(description="Of those, the ones the model answered uncertain.")
    without_image: int = Field(description="Reviewed, but the upload was not kept: unused.")
    window_days: int = Field(description="retraining.feedback_days: how far back it looks.")


class ReviewQueueOut(BaseModel):
    items: list[ReviewItemOut]
    counts: dict[str, int] = Field(description="Items waiting per kind, under the filters.")
    count_limit: int = Field(
        description="Counting stops here: a count equal to it means at least that many."
    )
    next_retrain: NextRetrainOut | None = Field(
        None, description="What the next retrain would learn from the verdicts given so far."
    )


class ClaimOut(BaseModel):
    item: ReviewItemOut | None = Field(description="None when nothing waits.")


class VerdictIn(BaseModel):
    label: str = Field(min_length=1, max_length=64, description="A model label, or 'skip'.")


class VerdictOut(BaseModel):
    prediction_id: str
    label: str
    recorded: bool = Field(description="False for 'skip': no feedback is stored.")
    predicted_label: str | None = None

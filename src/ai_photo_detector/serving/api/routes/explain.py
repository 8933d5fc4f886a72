"""POST /v1/explain: a verdict with the evidence behind it."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Query, Request, Response

from ai_photo_detector.contract.schemas import (
    ExplainResponse,
    Explanation,
)
from ai_photo_detector.model.explain import Evidence
from ai_photo_detector.serving.api.auth import PredictCaller
from ai_photo_detector.serving.api.body import read_one_image
from ai_photo_detector.serving.api.deps import ServicesDep
from ai_photo_detector.serving.api.middleware import request_id_of
from ai_photo_detector.serving.api.routes.predict import (
    IMAGE_BODY,
    ModelQuery,
    pick_model,
    prediction_response,
    ready_model,
    watched,
)
from ai_photo_detector.serving.api.schemas import (
    error_responses,
    prediction_fields,
)
from ai_photo_detector.serving.api.state import Services
from ai_photo_detector.serving.models import LoadedModel
from ai_photo_detector.serving.predictor import Caller, ScoredImage

router = APIRouter(prefix="/v1", tags=["explain"])

OverlayQuery = Query(True, description="Include the evidence drawn over the photo (base64 JPEG).")


@router.post(
    "/explain",
    response_model=ExplainResponse,
    summary="Score one image and show why",
    description="The same input and verdict as `/v1/predict` (and logged the same way), plus the "
    "evidence behind it: what each region of the model's view adds to the AI label's logit "
    "margin over its closest rival. Exact, not approximated: the grid averages to the margin.",
    responses=error_responses(400, 401, 403, 404, 409, 413, 415, 422, 429, 503),
    openapi_extra=IMAGE_BODY,
)
async def explain(
    request: Request,
    response: Response,
    services: ServicesDep,
    principal: PredictCaller,
    model: str | None = ModelQuery,
    overlay: bool = OverlayQuery,
) -> Response:
    loaded = ready_model(services, pick_model(services, request, principal, model))
    image = await read_one_image(request, services.settings.server)
    caller = Caller(request_id_of(request.scope), principal.key_id)
    prediction, evidence, picture = await explain_routed(services, loaded, image, caller, overlay)
    explanation = Explanation(
        target=evidence.target,
        against=evidence.against,
        grid=[[round(float(v), 5) for v in row] for row in evidence.grid],
        margin=evidence.margin,
        overlay_jpeg=base64.b64encode(picture).decode("ascii") if picture is not None else None,
    )
    body = ExplainResponse.model_construct(
        **prediction_fields(prediction), request_id=caller.request_id, explanation=explanation
    )
    return prediction_response(body, response)


async def explain_routed(
    services: Services, model: LoadedModel, data: bytes, caller: Caller, overlay: bool
) -> tuple[ScoredImage, Evidence, bytes | None]:
    """Explain, feed the canary guard, and mirror to the other model when rollout asks (the
    explaining twin of ``predict.score_routed``)."""
    with watched(services, model):
        found = await services.scorer.explain(model, data, caller, overlay)
    services.rollout.maybe_mirror(model, data, found[0], caller)
    return found

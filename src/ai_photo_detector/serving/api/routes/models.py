"""GET /v1/models and /v1/models/{name}: what is loaded, from the manifests' public parts."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path

from ai_photo_detector.contract.schemas import (
    ModelDetail,
    ModelList,
    ModelSummary,
)
from ai_photo_detector.serving.api.auth import require
from ai_photo_detector.serving.api.deps import ServicesDep
from ai_photo_detector.serving.api.schemas import (
    error_responses,
)

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Depends(require("predict"))])


@router.get("/models", response_model=ModelList, responses=error_responses(401, 403, 429))
async def list_models(services: ServicesDep) -> ModelList:
    return ModelList(
        models=[
            ModelSummary(
                name=m.name,
                version=m.version,
                ready=m.ready,
                labels=m.bundle.manifest.labels,
                deployable=m.bundle.manifest.deployable,
                reference=m.public_reference,
                registry_version=m.registry_version,
            )
            for m in services.models.models.values()
        ],
        default=services.models.default_name,
    )


@router.get(
    "/models/{name}", response_model=ModelDetail, responses=error_responses(401, 403, 404, 422, 429)
)
async def model_detail(
    services: ServicesDep, name: str = Path(max_length=128, description="Model name.")
) -> ModelDetail:
    model = services.models.get(name)
    return ModelDetail(
        name=model.name,
        version=model.version,
        ready=model.ready,
        reference=model.public_reference,
        registry_version=model.registry_version,
        manifest=model.bundle.manifest.public(),
    )

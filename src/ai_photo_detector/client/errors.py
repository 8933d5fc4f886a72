"""One exception type per stable error code of the API.

Each domain error of :mod:`ai_photo_detector.errors` has a client twin that subclasses it, so
``except ai_photo_detector.errors.Overloaded`` catches the service's refusal as it catches the
engine's own; what only HTTP can get wrong (keys, scopes, rate limits, sizes) has its own type.
Finer codes (``corrupt_image``, ``prediction_not_found`` …) land in their family's type with
``code`` telling them apart.
"""

from __future__ import annotations

from typing import Any

from ai_photo_detector import errors


class ServiceError(errors.DetectorError):
    """An error answer: the server's stable ``code`` and ``message``, the HTTP ``status``,
    the ``request_id`` to quote to its operators, and ``retry_after`` seconds when it said."""

    def __init__(
        self,
        message: str,
        code: str | None = None,
        *,
        status: int = 0,
        request_id: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code)
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.code}: {self.message}{where}"


class TransportError(ServiceError):
    """No answer: the service could not be reached, or did not answer in time."""

    code = "transport_error"


# --- twins of the domain errors ---------------------------------------------------------------


class InvalidInput(ServiceError, errors.InputError):
    """The request or the image cannot be used (corrupt, too small, wrong format …)."""


class ModelNotFound(ServiceError, errors.ModelNotFound): ...


class ModelNotReady(ServiceError, errors.ModelNotReady): ...


class ShuttingDown(ServiceError, errors.ShuttingDown): ...


class Overloaded(ServiceError, errors.Overloaded): ...


class ExplanationUnavailable(ServiceError, errors.ExplanationUnavailable): ...


class BundleInvalid(ServiceError, errors.BundleInvalid): ...


class RegistryUnavailable(ServiceError, errors.RegistryUnavailable): ...


class ReloadFailed(ServiceError, errors.ReloadFailed): ...


class DatasetInvalid(ServiceError, errors.DatasetInvalid): ...


class StoreUnavailable(ServiceError, errors.StoreUnavailable): ...


class TrainingFailed(ServiceError, errors.TrainingFailed): ...


class JobNotFound(ServiceError, errors.JobNotFound): ...


class JobConflict(ServiceError, errors.JobConflict): ...


class JobLimitReached(ServiceError, errors.JobLimitReached): ...


class JobsUnavailable(ServiceError, errors.JobsUnavailable): ...


class SettingsInvalid(ServiceError, errors.SettingsInvalid): ...


class RegionUnavailable(ServiceError, errors.RegionUnavailable):
    """The region that holds the prediction is down: retried after its Retry-After."""


# --- what only HTTP can get wrong -------------------------------------------------------------


class Unauthorized(ServiceError):
    """No key, an unknown key, or an expired one."""

    code = "unauthorized"


class Forbidden(ServiceError):
    """The key lacks the scope the route needs."""

    code = "insufficient_scope"


class NotFound(ServiceError):
    """No such route, prediction, retained image or lease."""

    code = "not_found"


class NotClaimed(ServiceError):
    """A review verdict or release on an item this reviewer holds no lease on."""

    code = "not_claimed"


class NotInRegion(NotFound, errors.NotInRegion):
    """The prediction was made in a region this one does not know."""

    code = "not_in_region"


class PayloadTooLarge(InvalidInput):
    """The body, an image or the number of files is over the service's limits."""

    code = "body_too_large"


class UnsupportedMediaType(InvalidInput):
    """Not an image format (or archive, or body type) the service reads."""

    code = "unsupported_media_type"


class NotAcceptable(ServiceError):
    code = "format_unavailable"


class RateLimited(ServiceError):
    """The key's request rate is over its limit: ``retry_after`` says when to come back."""

    code = "rate_limited"


class Unavailable(ServiceError):
    """The service cannot answer now (a dependency is down); try again later."""

    code = "unavailable"


class InternalError(ServiceError):
    code = "internal_error"


# Families of the domain errors, by the code their class carries.
_DOMAIN: tuple[type[ServiceError], ...] = (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ShuttingDown,
    Overloaded,
    ExplanationUnavailable,
    BundleInvalid,
    RegistryUnavailable,
    ReloadFailed,
    DatasetInvalid,
    StoreUnavailable,
    TrainingFailed,
    JobNotFound,
    JobConflict,
    JobLimitReached,
    JobsUnavailable,
    SettingsInvalid,
    RegionUnavailable,
)
CODE_TYPES: dict[str, type[ServiceError]] = {kind.code: kind for kind in _DOMAIN}
CODE_TYPES.update(
    {
        "missing_api_key": Unauthorized,
        "invalid_api_key": Unauthorized,
        "insufficient_scope": Forbidden,
        "not_found": NotFound,
        "prediction_not_found": NotFound,
        "image_not_retained": NotFound,
        "not_claimed": NotClaimed,
        "not_in_region": NotInRegion,
        "method_not_allowed": InvalidInput,
        "invalid_request": InvalidInput,
        "invalid_label": InvalidInput,
        "bad_request": InvalidInput,
        "bad_multipart": InvalidInput,
        "missing_file": InvalidInput,
        "empty_body": InvalidInput,
        "bad_idempotency_key": InvalidInput,
        "callback_refused": InvalidInput,
        "body_too_large": PayloadTooLarge,
        "too_many_files": PayloadTooLarge,
        "unsupported_media_type": UnsupportedMediaType,
        "unsupported_format": UnsupportedMediaType,
        "archive_unsupported": UnsupportedMediaType,
        "image_too_large": PayloadTooLarge,
        "format_unavailable": NotAcceptable,
        "rate_limited": RateLimited,
        "rate_limit_unavailable": Unavailable,
        "idempotency_key_reused": JobConflict,
        "job_finished": JobConflict,
        "internal_error": InternalError,
    }
)
# An unlisted code (a finer image code such as corrupt_image) goes by its status.
STATUS_TYPES: dict[int, type[ServiceError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    406: NotAcceptable,
    409: JobConflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidInput,
    429: RateLimited,
    503: Unavailable,
}


def error_type(code: str, status: int) -> type[ServiceError]:
    if code in CODE_TYPES:
        return CODE_TYPES[code]
    if status in STATUS_TYPES:
        return STATUS_TYPES[status]
    return InternalError if status >= 500 else ServiceError


def error_from_answer(
    status: int, body: Any, request_id: str, retry_after: float | None
) -> ServiceError:
    """The typed exception for an error answer (``{"error": {code, message, request_id}}``;
    a proxy's non-JSON answer gets a code from its status)."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or f"http_{status}")
        message = str(error.get("message") or "")
        request_id = str(error.get("request_id") or request_id)
    else:
        code, message = f"http_{status}", f"HTTP {status} without an error body"
    kind = error_type(code, status)
    return kind(message, code, status=status, request_id=request_id, retry_after=retry_after)

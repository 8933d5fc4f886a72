"""Errors a client can cause, each with an HTTP status and a stable code."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


# Image problems (imaging.ImageError codes) -> HTTP status.
IMAGE_ERROR_STATUS = {
    "empty_body": 400,
    "unsupported_format": 415,
    "corrupt_image": 422,
    "truncated_image": 422,
    "image_too_large": 413,
    "image_too_small": 422,
    "polyglot_file": 422,
}


class Overloaded(Exception):
    """The inference queue is full: answer 503 at once instead of queueing."""

"""A typed client for the service's HTTP API, sync and async, on httpx.

>>> from ai_photo_detector.client import Client
>>> with Client("http://localhost:8000") as client:          # key: APD_API_KEY
...     answer = client.predict("listing.jpg")
...     answer.band, answer.probability

Imports httpx, pydantic and the contract models only, so it installs without the serving
stack (``clients/python``). Answers are the server's own response models
(:mod:`ai_photo_detector.contract`); errors are :mod:`ai_photo_detector.client.errors` types.
"""

from ai_photo_detector.client.aio import AsyncClient
from ai_photo_detector.client.base import api_key_from_environment
from ai_photo_detector.client.errors import ServiceError, TransportError
from ai_photo_detector.client.retry import NO_RETRY, RetryPolicy
from ai_photo_detector.client.sync import Client
from ai_photo_detector.contract.signatures import SignatureInvalid, verify_signature

__all__ = [
    "NO_RETRY",
    "AsyncClient",
    "Client",
    "RetryPolicy",
    "ServiceError",
    "SignatureInvalid",
    "TransportError",
    "api_key_from_environment",
    "verify_signature",
]

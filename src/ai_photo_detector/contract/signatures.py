"""Webhook signatures: HMAC-SHA256 over ``"{timestamp}.{body}"``, the scheme Stripe and GitHub
use. The server signs with it and the client verifies with it: one function each, no copy.

The header reads ``t=<unix seconds>,v1=<hex digest>``; the timestamp is signed too, so an
old event replayed later fails the tolerance check even though its digest is genuine.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-APD-Signature"
EVENT_HEADER = "X-APD-Event"
DELIVERY_HEADER = "X-APD-Delivery"
DEFAULT_TOLERANCE_S = 300


class SignatureInvalid(ValueError):
    """The signature header is missing, malformed, wrong, or too old."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    moment = int(time.time()) if timestamp is None else timestamp
    return f"t={moment},v1={signature(secret, moment, body)}"


def verify_signature(
    secret: str,
    header: str | None,
    body: bytes,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Check a delivery's signature header against its raw body; returns the signed timestamp.

    Every ``v1`` entry is tried (a sender rotating its secret may sign with both), compared in
    constant time. Raises :class:`SignatureInvalid` otherwise.
    """
    if not header:
        raise SignatureInvalid(f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    digests: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            digests.append(value)
    if timestamp is None or not digests:
        raise SignatureInvalid("the signature header lacks t= or v1=")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureInvalid(f"the signature is {abs(current - timestamp):.0f} s old")
    expected = signature(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, digest) for digest in digests):
        raise SignatureInvalid("the signature does not match the body")
    return timestamp

"""The published HTTP contract: the request and response models of ``/v1``, shared by the
server (which answers in them) and ``ai_photo_detector.client`` (which reads them).

Depends on pydantic and the standard library only, so the client installs without the
serving stack; ``docs/openapi.json`` is generated from these models and checked in tests.
"""

# The major number moves on a breaking change to a /v1 route (contract.compatibility checks).
API_VERSION = "1.0.0"

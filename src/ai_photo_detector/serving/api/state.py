"""What request handlers reach through dependencies: the service's runtime (every component,
built by :func:`ai_photo_detector.serving.runtime.running`) and the HTTP layer's rate limiter."""

from __future__ import annotations

from ai_photo_detector.serving.runtime import Runtime

Services = Runtime  # handlers see the runtime; the name says what they use it for

"""Property-based requests generated from the OpenAPI schema: nothing may answer 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402

from ai_photo_detector.serving.api.app import create_app  # noqa: E402
from ai_photo_detector.settings import Settings  # noqa: E402


@pytest.fixture(scope="module")
def running_app(bundle_dir: Path) -> Iterator[Any]:
    app = create_app(Settings(model=str(bundle_dir), rate_limit={"enabled": False}))
    with TestClient(app):  # runs the lifespan: model loaded and warm
        yield app


def test_no_server_errors(running_app: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", running_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            response = case.call()
            assert response.status_code < 500, (case.method, case.path, response.text)
            if response.status_code >= 400:
                assert set(response.json()["error"]) == {"code", "message", "request_id"}

        check()

"""What an explanation costs: /v1/explain against /v1/predict, one request at a time.

The full app over an in-process ASGI transport with the shipped model, 1024x1024 JPEGs, one
request at a time (an explanation is interactive: a reviewer waits for it), 7 alternating
rounds. Reports the median latency of each route and the ratio, with and without the overlay
picture. No target: the numbers say what a reviewer's click costs the service.
Run: .venv/bin/python -m benchmarks.explain_cost
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.settings import Settings
from benchmarks.common import print_table, write_csv
from benchmarks.photos import sample_photo

ROUNDS, REQUESTS = 7, 30
ROUTES = {
    "predict": "/v1/predict",
    "explain": "/v1/explain",
    "explain, no overlay": "/v1/explain?overlay=false",
}


async def measure(settings: Settings, photos: list[bytes]) -> dict[str, list[float]]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    latencies: dict[str, list[float]] = {name: [] for name in ROUTES}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench") as client,
    ):
        for path in ROUTES.values():  # warm-up
            assert (await client.post(path, content=photos[0])).status_code == 200
        for round_index in range(ROUNDS):
            names = list(ROUTES) if round_index % 2 == 0 else list(reversed(ROUTES))
            for name in names:
                times = []
                for i in range(REQUESTS):
                    started = time.perf_counter()
                    response = await client.post(ROUTES[name], content=photos[i % len(photos)])
                    times.append(time.perf_counter() - started)
                    assert response.status_code == 200, response.text
                latencies[name].append(statistics.median(times) * 1000)
    return latencies


def main() -> None:
    photos = [sample_photo(1024, 1024, i) for i in range(4)]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            database_url=f"sqlite:///{Path(tmp) / 'explain.db'}",
            monitoring={"enabled": False},
            rate_limit={"enabled": False},
        )
        latencies = asyncio.run(measure(settings, photos))
    predict = statistics.median(latencies["predict"])
    rows = [
        {
            "route": name,
            "median_latency_ms": statistics.median(values),
            "ratio_to_predict": statistics.median(values) / predict,
            "rounds": ROUNDS,
            "requests_per_round": REQUESTS,
        }
        for name, values in latencies.items()
    ]
    print_table(rows)
    print("written", write_csv("explain_cost", rows))


if __name__ == "__main__":
    main()

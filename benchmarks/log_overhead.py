"""Cost of the prediction log: throughput with logging off, on, and on in durable mode (every
row appended to the local spool first), same process, same photos.

The configurations run in rotating rounds (so machine noise hits all alike) through the full
app over an in-process ASGI transport at concurrency 8. Target: logging costs <= 5 %.
Run: .venv/bin/python -m benchmarks.log_overhead
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.settings import Settings
from benchmarks.common import print_table, write_csv
from benchmarks.photos import sample_photo

ROUNDS, REQUESTS, CONCURRENCY = 6, 160, 8


async def round_rate(settings: Settings, photos: list[bytes]) -> tuple[float, int]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench") as client,
    ):
        semaphore = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            async with semaphore:
                response = await client.post("/v1/predict", content=photos[i % len(photos)])
                assert response.status_code == 200

        await one(0)  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(REQUESTS)))
        elapsed = time.perf_counter() - started
        log = app.state.services.prediction_log
        written = 0
        if log is not None:
            log.flush(30)
            written = log.counters.written
    return REQUESTS / elapsed, written


def main() -> None:
    photos = [sample_photo(1024, 1024, i) for i in range(4)]
    modes = ["off", "on", "durable"]
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    written = 0
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(ROUNDS):
            for mode in modes[round_index % 3 :] + modes[: round_index % 3]:
                settings = Settings(
                    database_url=f"sqlite:///{Path(tmp) / f'log{round_index}{mode}.db'}",
                    prediction_log={
                        "enabled": mode != "off",
                        "durable": mode == "durable",
                        "spool_dir": str(Path(tmp) / f"spool{round_index}"),
                    },
                    monitoring={"enabled": False},
                    rate_limit={"enabled": False},
                    jobs={"enabled": False},  # no job worker process competing for the cores
                )
                rate, count = asyncio.run(round_rate(settings, photos))
                rates[mode].append(rate)
                written += count
    print({mode: [round(r, 1) for r in values] for mode, values in rates.items()})
    off, on, durable = (max(rates[mode]) for mode in modes)
    rows = [
        {
            "logging_off_img_per_s": off,
            "logging_on_img_per_s": on,
            "durable_img_per_s": durable,
            "cost": 1 - on / off,
            "durable_cost": 1 - durable / off,
            "rows_written": written,
            "rounds": ROUNDS,
        }
    ]
    print_table(rows)
    print("written", write_csv("log_overhead", rows))


if __name__ == "__main__":
    main()

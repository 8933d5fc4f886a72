"""Is a request lost when it reaches an idle keep-alive connection while the event loop is
stalled past the keep-alive timeout?

If the loop ran the due keep-alive timer before reading the waiting request, the server would
close a connection holding unread bytes and the client would see a reset. Here the service's
own HTTP protocol (``GuardedHttpToolsProtocol``) serves a small app in uvicorn, under uvloop
and under asyncio: connection A finishes a request, then a request on connection B blocks the
loop for longer than the keep-alive timeout, and A sends its next request during that stall.
Every such request must be answered.

Run: .venv/bin/python -m reliability.keepalive [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from ai_photo_detector.serving.api.protocol import GuardedHttpToolsProtocol
from reliability.faults import RESULTS, free_port

KEEP_ALIVE_S = 1


def _app(stall_s: float) -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(body: dict[str, int]) -> dict[str, int]:
        return body

    @app.post("/stall")
    async def stall() -> dict[str, bool]:
        time.sleep(stall_s)  # blocks the event loop on purpose
        return {"stalled": True}

    return app


def stalled_keep_alive(loop: str, rounds: int, stall_s: float = 1.6) -> dict[str, Any]:
    port = free_port()
    config = uvicorn.Config(
        _app(stall_s),
        host="127.0.0.1",
        port=port,
        loop=loop,
        http=GuardedHttpToolsProtocol,
        timeout_keep_alive=KEEP_ALIVE_S,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    outcomes: Counter[str] = Counter()
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(rounds):
            with httpx.Client(base_url=base, timeout=30) as a, httpx.Client(base_url=base) as b:
                a.post("/echo", json={"n": 1})  # A is idle now: its keep-alive timer runs
                blocker = threading.Thread(target=lambda: b.post("/stall", timeout=30))
                blocker.start()
                time.sleep(0.3)  # the loop is inside the stall
                try:
                    outcomes[str(a.post("/echo", json={"n": 2}).status_code)] += 1
                except httpx.TransportError as exc:
                    outcomes[type(exc).__name__] += 1
                blocker.join()
    finally:
        server.should_exit = True
        thread.join(10)
    return {
        "loop": loop,
        "keep_alive_s": KEEP_ALIVE_S,
        "stall_s": stall_s,
        "rounds": rounds,
        "outcomes": dict(outcomes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = [stalled_keep_alive(loop, args.rounds) for loop in ("uvloop", "asyncio")]
    print(json.dumps(results, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "keepalive.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

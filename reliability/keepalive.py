"""Is a request lost when it reaches an idle keep-alive connection while the event loop is
stalled past the keep-alive timeout?

If the loop ran the due keep-alive timer before reading the waiting request, the server would
close a connection holding unread bytes and the client would see a reset. Here the service's
own HTTP protocol (``GuardedHttpToolsProtocol``) serves a small app in uvicorn, under uvloop
and under asyncio: connection A finishes a request, then a request on connection B blocks the
loop for longer than the keep-alive timeout, and A sends its next request during that stall.
The stall is either in the route (a task step) or in the protocol's ``data_received`` (an I/O
callback: uvloop then runs due timers before it polls the sockets again). Every such request
must be answered.

Run: .venv/bin/python -m reliability.keepalive [--rounds 10]
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


def _app(stall_s: float, where: str) -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(body: dict[str, int]) -> dict[str, int]:
        return body

    @app.post("/stall")
    async def stall() -> dict[str, bool]:
        if where == "route":
            time.sleep(stall_s)  # blocks the event loop on purpose
        return {"stalled": True}

    return app


def _protocol(stall_s: float, where: str) -> type[GuardedHttpToolsProtocol]:
    if where != "io":
        return GuardedHttpToolsProtocol

    class StallingProtocol(GuardedHttpToolsProtocol):
        def data_received(self, data: bytes) -> None:
            if data.startswith(b"POST /stall"):
                time.sleep(stall_s)  # blocks the event loop inside an I/O callback
            super().data_received(data)

    return StallingProtocol


def stalled_keep_alive(
    loop: str, rounds: int, stall_s: float = 1.6, where: str = "route"
) -> dict[str, Any]:
    port = free_port()
    config = uvicorn.Config(
        _app(stall_s, where),
        host="127.0.0.1",
        port=port,
        loop=loop,
        http=_protocol(stall_s, where),
        timeout_keep_alive=KEEP_ALIVE_S,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    outcomes: Counter[str] = Counter()
    waits: list[float] = []  # how long A's request waited: the stall it arrived in
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(rounds):
            with httpx.Client(base_url=base, timeout=30) as a, httpx.Client(base_url=base) as b:
                b.get("/docs")  # B's connection is open before the stall is asked for
                a.post("/echo", json={"n": 1})  # A is idle now: its keep-alive timer runs
                blocker = threading.Thread(target=lambda: b.post("/stall", timeout=30))
                blocker.start()
                time.sleep(0.3)  # the loop is inside the stall
                began = time.monotonic()
                try:
                    outcomes[str(a.post("/echo", json={"n": 2}).status_code)] += 1
                except httpx.TransportError as exc:
                    outcomes[type(exc).__name__] += 1
                waits.append(time.monotonic() - began)
                blocker.join()
    finally:
        server.should_exit = True
        thread.join(10)
    return {
        "loop": loop,
        "stall_in": where,
        "keep_alive_s": KEEP_ALIVE_S,
        "stall_s": stall_s,
        "rounds": rounds,
        "outcomes": dict(outcomes),
        "shortest_wait_s": round(min(waits), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    results = [
        stalled_keep_alive(loop, args.rounds, where=where)
        for where in ("route", "io")
        for loop in ("uvloop", "asyncio")
    ]
    print(json.dumps(results, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "keepalive.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

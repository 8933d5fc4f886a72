"""Closed-loop HTTP load with wrk (Debian package `wrk`): N connections, each sending its next
request when the last answer arrives, photos taken in turn.

A C client, because the client shares the server's 2 cores: a Python client's own CPU per
request (about 0.5 ms for aiohttp, more for httpx) would be billed to the server at low
concurrency.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

_SCRIPT = """
local bodies = {}
for i, path in ipairs({%(paths)s}) do
  local file = io.open(path, "rb"); bodies[i] = file:read("*all"); file:close()
end
local sent = 0
request = function()
  sent = sent + 1
  return wrk.format("POST", "/v1/predict", {["Content-Type"] = "image/jpeg"},
                    bodies[(sent %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "non_2xx": %%d, "socket_errors": %%d, ' ..
    '"p50_us": %%d, "p95_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def load(port: int, photos: list[bytes], concurrency: int, seconds: float) -> dict[str, Any]:
    """Throughput of 2xx answers and latency percentiles of all answers."""
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, photo in enumerate(photos):
            path = Path(folder) / f"photo{i}.jpg"
            path.write_bytes(photo)
            paths.append(f'"{path}"')
        script = Path(folder) / "load.lua"
        script.write_text(_SCRIPT % {"paths": ", ".join(paths)})
        output = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{concurrency}",
                f"-d{seconds}s",
                "--timeout",
                "60s",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}/v1/predict",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    summary = json.loads(output.strip().splitlines()[-1])
    ok = summary["requests"] - summary["non_2xx"]
    return {
        "ok_per_s": ok / (summary["duration_us"] / 1e6),
        "p50_ms": summary["p50_us"] / 1000,
        "p95_ms": summary["p95_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        "p50_503_ms": float("nan"),
        "p99_503_ms": float("nan"),
        "status_counts": f"2xx:{ok} other:{summary['non_2xx']} "
        f"socket_errors:{summary['socket_errors']}",
    }

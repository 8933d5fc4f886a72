"""The runtimes a graph can run on, behind ONNX Runtime's call shape: ``run(names, feeds)``.

ONNX Runtime runs every graph. OpenVINO, where installed, runs the static INT8 encoder graphs
faster on x86 CPUs (its INT8 kernels fuse each quantise/dequantise pair into the product, and it
fuses LayerNorm and attention): a bundle's recipe names the runtime its features were measured
on, and ONNX Runtime is the fallback where OpenVINO cannot be imported (its probe is recorded too).
"""

from __future__ import annotations

import functools
import io
import logging
import os
import queue
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import onnxruntime as ort

logger = logging.getLogger(__name__)

Runtime = Literal["onnxruntime", "openvino"]
Spinning = Literal["during_run", "always", "never"]


class GraphSession(Protocol):
    def run(
        self, output_names: list[str], input_feed: dict[str, NDArray[np.float32]]
    ) -> list[NDArray[np.float32]]: ...


def available_cpus() -> int:
    """CPUs this process may run on (a container's limit included where the kernel says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# CPU flags (Linux /proc/cpuinfo) of the integer dot-product instructions OpenVINO's INT8
# kernels are fast with; without them ONNX Runtime ran the default's graph twice as fast.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


@functools.cache
def cpu_has_vnni(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has VNNI (or AMX) integer kernels; True where it cannot be read, so an
    unknown CPU keeps the recipe's runtime."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return True
    for line in text.splitlines():
        if line.startswith("flags"):
            return not VNNI_FLAGS.isdisjoint(line.split(":", 1)[1].split())
    return True


def requested_runtime(setting: str) -> Runtime | None:
    """The runtime ``inference.runtime`` asks for instead of the recipe's; None: the recipe's."""
    if setting in ("onnxruntime", "openvino"):
        return setting  # type: ignore[return-value]
    if setting == "auto" and not cpu_has_vnni():
        return "onnxruntime"
    return None


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def make_session(
    model: str | bytes,
    intra_op_threads: int = 0,
    inter_op_threads: int = 1,
    spinning: Spinning = "always",
) -> ort.InferenceSession:
    """An ONNX Runtime CPU session. ``spinning`` says when idle intra-op threads busy-wait.

    "always" is ONNX Runtime's default. "during_run" keeps the busy-wait between the operators
    of a run (without it a single image is ~30 % slower: every operator wakes the threads
    again) and stops it when the run returns, so the cores go to decoding between runs.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Always an explicit count: left at 0, ONNX Runtime also pins its threads to cores, and a
    # caller thread the kernel puts on a pinned worker's core then halves the run's speed
    # (seen as a slow tail at concurrency 1 once a burst had spread the server's threads).
    options.intra_op_num_threads = intra_op_threads or available_cpus()
    if inter_op_threads:
        options.inter_op_num_threads = inter_op_threads
    if spinning == "never":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    elif spinning == "during_run":
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OpenVinoSession:
    """An ONNX graph compiled by OpenVINO for the CPU, called like an ONNX Runtime session.

    Float operators run in FP32 (OpenVINO would pick BF16 on CPUs that have it, and the features
    would then differ from machine to machine); the INT8 products run on its integer kernels.
    Calls may come from several threads: each takes an infer request of its own.
    """

    def __init__(
        self, model: str | bytes, threads: int = 0, extra: dict[str, object] | None = None
    ) -> None:
        """``extra``: more OpenVINO CPU properties, over the ones set here (benchmarks)."""
        import openvino as ov

        core = ov.Core()
        graph = core.read_model(io.BytesIO(model) if isinstance(model, bytes) else model)
        self.compiled = core.compile_model(
            graph,
            "CPU",
            {
                "INFERENCE_NUM_THREADS": threads or available_cpus(),
                "INFERENCE_PRECISION_HINT": "f32",
                "PERFORMANCE_HINT": "LATENCY",
                # Unpinned, as for ONNX Runtime: a pinned worker sharing a core with a decode
                # thread halves the run.
                "ENABLE_CPU_PINNING": False,
                **(extra or {}),
            },
        )
        self.requests: queue.SimpleQueue[ov.InferRequest] = queue.SimpleQueue()

    def run(
        self, output_names: list[str], input_feed: dict[str, NDArray[np.float32]]
    ) -> list[NDArray[np.float32]]:
        try:
            request = self.requests.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            request.infer(input_feed)
            # Copies: the request's buffers are overwritten by its next run.
            return [np.array(request.get_tensor(name).data) for name in output_names]
        finally:
            self.requests.put(request)


def open_session(
    model: str | bytes,
    runtime: Runtime,
    intra_op_threads: int = 0,
    inter_op_threads: int = 1,
    spinning: Spinning = "always",
) -> tuple[GraphSession, Runtime]:
    """A session on ``runtime``, or on ONNX Runtime where OpenVINO cannot be imported; returns
    the session and the runtime it really runs on."""
    if runtime == "openvino":
        if openvino_available():
            try:
                return OpenVinoSession(model, intra_op_threads), "openvino"
            except Exception as exc:  # a CPU or build OpenVINO cannot compile for
                logger.warning("OpenVINO cannot run the graph (%s): using ONNX Runtime", exc)
        else:
            logger.warning("OpenVINO is not installed: running the graph on ONNX Runtime")
    return make_session(model, intra_op_threads, inter_op_threads, spinning), "onnxruntime"

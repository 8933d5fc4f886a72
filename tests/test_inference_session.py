"""ONNX Runtime session options built from the inference settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ai_photo_detector.model.runtimes import make_session
from ai_photo_detector.settings import Settings

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "fast" / "model.onnx"


@pytest.mark.parametrize(
    ("spinning", "expected"),
    [
        ("always", {}),
        ("during_run", {"session.force_spinning_stop": "1"}),
        ("never", {"session.intra_op.allow_spinning": "0"}),
    ],
)
def test_spinning_modes_set_onnx_runtime_options(spinning: str, expected: dict[str, str]) -> None:
    session = make_session(str(SHIPPED), spinning=spinning)  # type: ignore[arg-type]
    options = session.get_session_options()
    for key in ("session.intra_op.allow_spinning", "session.force_spinning_stop"):
        try:
            value: str | None = options.get_session_config_entry(key)
        except RuntimeError:  # ONNX Runtime raises for a key that was never set
            value = None
        assert value == expected.get(key), key
    logits = session.run(["logits"], {"image": np.zeros((1, 3, 224, 224), np.float32)})[0]
    assert logits.shape == (1, 2) and np.isfinite(logits).all()


def test_adaptive_spinning_gives_lone_images_their_own_spinning_session() -> None:
    from ai_photo_detector.serving.models import ModelManager

    settings = Settings(model=str(SHIPPED.parent))
    assert settings.inference.spinning == "adaptive"
    batcher = ModelManager(settings).build(str(SHIPPED.parent), "champion").batcher
    assert batcher.solo is not batcher.detector
    solo = batcher.solo.session.get_session_options()
    batched = batcher.detector.session.get_session_options()
    assert solo.get_session_config_entry("session.force_spinning_stop") == "1"
    assert batched.get_session_config_entry("session.intra_op.allow_spinning") == "0"

    single = Settings(model=str(SHIPPED.parent), inference={"spinning": "never"})
    one = ModelManager(single).build(str(SHIPPED.parent), "champion").batcher
    assert one.solo is one.detector


def test_thread_count_is_always_explicit_so_threads_are_not_pinned() -> None:
    from ai_photo_detector.model.runtimes import available_cpus

    assert make_session(str(SHIPPED)).get_session_options().intra_op_num_threads == (
        available_cpus()
    )
    assert make_session(str(SHIPPED), 1).get_session_options().intra_op_num_threads == 1

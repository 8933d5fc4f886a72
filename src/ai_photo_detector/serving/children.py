"""Commands the service runs in their own processes (the job worker, a retrain): they get
exactly the service's settings, written to a file, because settings given in code would be
lost and the environment's APD_ variables would outrank the file in the child."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from ai_photo_detector.settings import Settings

# APD_ variables that are not settings fields: the child keeps them.
NOT_SETTINGS = frozenset({"APD_GRAPH_CACHE", "APD_ADMIN_KEY"})


def child_command(settings: Settings, folder: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    """``ai-photo-detector ARGS --config FILE`` and the environment to run it in."""
    config = folder / "settings.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("APD_") or k in NOT_SETTINGS}
    command = [sys.executable, "-m", "ai_photo_detector.cli", *args, "--config", str(config)]
    return command, env

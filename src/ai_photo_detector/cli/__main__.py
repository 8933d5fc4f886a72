"""``python -m ai_photo_detector.cli``."""

from ai_photo_detector.cli import app

app()

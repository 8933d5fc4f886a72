"""AI Product Photo Detector: train, evaluate, calibrate, export and serve a detector."""

__version__ = "0.1.0"

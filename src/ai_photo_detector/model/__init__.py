"""The detector itself: the bundle, the encoders it is built on, and how it answers (inference,
calibration, the familiarity check, explanations). Torch-free."""

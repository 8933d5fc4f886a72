"""Measuring a bundle on labelled data: scoring files, metrics, the per-source table, the
report, finalising (calibrate, evaluate, gate) and what a bundle was made from."""

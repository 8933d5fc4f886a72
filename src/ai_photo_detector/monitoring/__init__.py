"""Monitoring: the store (prediction log, feedback, drift history, alerts), drift detection."""

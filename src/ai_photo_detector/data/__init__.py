"""Datasets: discovery, validation report, shortcut audit, duplicate-aware splits."""

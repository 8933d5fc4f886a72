"""Batch scoring: jobs behind the API (archives and manifests, a queue, workers that lease
chunks) and the ``score`` command for folders and storage prefixes, on one machine or on Ray."""

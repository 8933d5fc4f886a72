"""Serving: ONNX Runtime engine with micro-batching and the HTTP API. Never imports torch."""

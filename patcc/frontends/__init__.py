"""Frontends: ONNX models and torch modules into the patcc IR (the raw graph)."""

"""Frontends: ONNX models (and, later, torch modules) into the patcc IR."""

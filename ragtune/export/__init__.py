"""Exporting trained runs to formats other runtimes serve: :mod:`ragtune.export.onnx` (ONNX, optional int8)."""

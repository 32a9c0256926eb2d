"""Metrics over a Predictor: the same code measures a PyTorch module and an ONNX Runtime session."""

"""int8 quantization that runs int8 on ONNX Runtime: post-training static (PTQ) and quantization-aware (QAT)."""

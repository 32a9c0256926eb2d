"""Measure one model end to end with the same Predictor code: accuracy block, complexity, speed."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from drivecompress.data.dataset import LabeledImages
from drivecompress.data.transforms import deploy_input
from drivecompress.evaluate.accuracy import classification_metrics
from drivecompress.evaluate.complexity import count_macs, count_params, onnx_params, size_on_disk
from drivecompress.evaluate.latency import SpeedConfig, measure_speed
from drivecompress.evaluate.loading import LoadedModel
from drivecompress.evaluate.machine import machine_info
from drivecompress.evaluate.predictor import Predictor, predict_all
from drivecompress.export.onnx import export_onnx


def evaluate_predictor(predictor: Predictor, test: LabeledImages, batch_size: int = 512) -> dict[str, Any]:
    """Accuracy, per-class recall, ECE, accuracy by sign size, safety-critical minimum recall."""
    logits = predict_all(predictor, test.x, batch_size)
    return {**classification_metrics(logits, test.y, test.sizes), "images": len(test)}


def complexity(model: LoadedModel) -> dict[str, Any]:
    """Params and MACs (from the torch module when there is one) and size on disk of the artifact."""
    if model.module is not None:
        weights = model.source / "model.safetensors"
        return {"params": count_params(model.module), "macs": count_macs(model.module),
                "size_bytes": size_on_disk(weights)}
    assert model.onnx_path is not None
    return {"params": onnx_params(model.onnx_path), "macs": None, "size_bytes": size_on_disk(model.onnx_path)}


def bench(model: LoadedModel, check: LabeledImages, cfg: SpeedConfig | None = None) -> dict[str, Any]:
    """Speed on ONNX Runtime (the deploy runtime). A checkpoint is exported to a temporary fp32 ONNX first
    (parity checked); its eager PyTorch speed is reported alongside for reference."""
    out: dict[str, Any] = {**complexity(model)}
    if model.module is not None:
        images = deploy_input(check.x[:64])
        with tempfile.TemporaryDirectory() as tmp:
            res = export_onnx(model.module, Path(tmp) / "model.onnx", images)
            out["onnx_max_abs_diff"] = res.max_abs_diff
            out["onnx_size_bytes"] = size_on_disk(res.path)
            out.update(measure_speed(res.path, cfg))
        torch_speed = measure_speed(model.module, cfg)
        out.update({f"torch_{k}": v for k, v in torch_speed.items()})
    else:
        out.update(measure_speed(model.onnx_path, cfg))
    out["machine"] = machine_info()
    return out

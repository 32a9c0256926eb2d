"""Measure one model end to end with the same Predictor code: accuracy block, complexity, speed."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from drivecompress.data.dataset import LabeledImages
from drivecompress.data.transforms import deploy_input
from drivecompress.errors import BadInputError
from drivecompress.evaluate.accuracy import classification_metrics
from drivecompress.evaluate.complexity import count_macs, count_params, onnx_macs, onnx_params, size_on_disk
from drivecompress.evaluate.latency import SpeedConfig, measure_speed
from drivecompress.evaluate.loading import LoadedModel
from drivecompress.evaluate.machine import machine_info
from drivecompress.evaluate.predictor import Predictor, predict_all
from drivecompress.export.onnx import export_onnx


def evaluate_predictor(predictor: Predictor, test: LabeledImages, batch_size: int = 512,
                       safety_critical: Iterable[int] = (), num_classes: int | None = None) -> dict[str, Any]:
    """Accuracy, per-class recall, ECE, accuracy by sign size, safety-critical minimum recall.

    A model whose output width is not the data's class count is refused (it would be scored against the
    wrong classes)."""
    if len(test) == 0:
        raise BadInputError("test set: no images to evaluate on")
    logits = predict_all(predictor, test.x, batch_size)
    k = num_classes if num_classes is not None else int(test.y.max()) + 1
    if logits.ndim != 2 or logits.shape[1] != k:
        raise BadInputError(f"{predictor.name}: the model outputs {logits.shape[1:]} scores per image, "
                            f"the data has {k} classes")
    return {**classification_metrics(logits, test.y, test.sizes, safety_critical), "images": len(test)}


def complexity(model: LoadedModel, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Params and MACs (from the torch module when there is one) and size on disk of the artifact."""
    if model.module is not None:
        weights = model.source / "model.safetensors"
        return {"params": count_params(model.module), "macs": count_macs(model.module, input_shape),
                "size_bytes": size_on_disk(weights)}
    assert model.onnx_path is not None
    return {"params": onnx_params(model.onnx_path), "macs": onnx_macs(model.onnx_path),
            "size_bytes": size_on_disk(model.onnx_path)}


def bench(model: LoadedModel, check: LabeledImages, cfg: SpeedConfig | None = None,
          input_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Speed on ONNX Runtime (the deploy runtime). A checkpoint is exported to a temporary fp32 ONNX first
    (parity checked); its eager PyTorch speed is reported alongside for reference."""
    shape = input_shape or (check.x.shape[3], *check.x.shape[1:3])
    out: dict[str, Any] = {**complexity(model, shape)}
    if model.module is not None:
        images = deploy_input(check.x[:64])
        with tempfile.TemporaryDirectory() as tmp:
            res = export_onnx(model.module, Path(tmp) / "model.onnx", images)
            out["onnx_max_abs_diff"] = res.max_abs_diff
            out["onnx_size_bytes"] = size_on_disk(res.path)
            out.update(measure_speed(res.path, cfg, shape))
        torch_speed = measure_speed(model.module, cfg, shape)
        out.update({f"torch_{k}": v for k, v in torch_speed.items()})
    else:
        out.update(measure_speed(model.onnx_path, cfg, shape))
    out["machine"] = machine_info()
    return out

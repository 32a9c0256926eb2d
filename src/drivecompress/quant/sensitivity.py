"""Sensitivity-guided mixed precision: how much accuracy does quantizing each layer alone cost?

Each quantizable node is quantized on its own (everything else float) and the model is evaluated on a
validation subset on ONNX Runtime. When the fully quantized model misses the accuracy budget, the worst
offenders are kept in float, one at a time, until it fits (or nothing is left to give back).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from drivecompress.data.dataset import LabeledImages
from drivecompress.evaluate.predictor import OnnxPredictor, predict_all
from drivecompress.quant.ptq import PTQConfig, preprocess, quantizable_nodes, quantize_ptq


@dataclass
class SensitivityReport:
    """Per-node accuracy drop (points of accuracy, fp32 minus quantized-alone) and what was kept float."""

    fp32_accuracy: float
    per_node_drop: dict[str, float]
    kept_float: list[str] = field(default_factory=list)
    steps: list[dict[str, float | str]] = field(default_factory=list)
    final_accuracy: float = float("nan")


def _acc(path: Path, data: LabeledImages) -> float:
    return float((predict_all(OnnxPredictor(path), data.x).argmax(1) == data.y).mean())


def layer_sensitivity(fp32_onnx: Path, calib: np.ndarray, val: LabeledImages, cfg: PTQConfig) -> SensitivityReport:
    """Quantize each Conv/Gemm alone and record the accuracy drop on ``val``."""
    base = _acc(fp32_onnx, val)
    with tempfile.TemporaryDirectory(prefix="dc-sens-") as tmp:
        names = quantizable_nodes(onnx.load(str(preprocess(fp32_onnx, Path(tmp) / "pre.onnx"))))
        drops = {}
        for name in names:
            out = Path(tmp) / "one.onnx"
            quantize_ptq(fp32_onnx, out, calib, replace(cfg, exclude=()), only_nodes=[name])
            drops[name] = 100.0 * (base - _acc(out, val))
    return SensitivityReport(fp32_accuracy=base, per_node_drop=drops)


def mixed_precision(
    fp32_onnx: Path, out: Path, calib: np.ndarray, val: LabeledImages, cfg: PTQConfig, max_drop_points: float
) -> SensitivityReport:
    """Full int8 first; while the drop exceeds the budget, keep the next most sensitive layer in float."""
    report = layer_sensitivity(fp32_onnx, calib, val, cfg)
    order = sorted(report.per_node_drop, key=report.per_node_drop.get, reverse=True)
    kept: list[str] = list(cfg.exclude)
    while True:
        quantize_ptq(fp32_onnx, out, calib, replace(cfg, exclude=tuple(kept)))
        acc = _acc(out, val)
        report.steps.append({"kept_float": ", ".join(kept) or "-", "accuracy": acc})
        drop = 100.0 * (report.fp32_accuracy - acc)
        remaining = [n for n in order if n not in kept]
        if drop <= max_drop_points or not remaining or len(kept) >= len(order) // 2:
            break
        kept.append(remaining[0])
    report.kept_float, report.final_accuracy = kept, acc
    return report

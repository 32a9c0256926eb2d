"""Sensitivity-guided mixed precision: how much accuracy does quantizing each layer alone cost?

Each quantizable node is quantized on its own (everything else float) and the model is evaluated on a
validation subset on ONNX Runtime. When the fully quantized model misses the accuracy budget, the worst
offenders are kept in float, one at a time, until it fits (or nothing is left to give back).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
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
            quantize_ptq(fp32_onnx, out, calib, cfg.model_copy(update={'exclude': []}), only_nodes=[name])
            drops[name] = 100.0 * (base - _acc(out, val))
    return SensitivityReport(fp32_accuracy=base, per_node_drop=drops)


def mixed_precision(
    fp32_onnx: Path, out: Path, calib: np.ndarray, val: LabeledImages, cfg: PTQConfig, max_drop_points: float
) -> SensitivityReport:
    """Full int8 first; only if the drop exceeds the budget, measure per-layer sensitivity and keep the most
    sensitive layers in float one at a time — a layer stays float only if that measurably helps (every float
    layer costs speed), and the search stops at the first layer that does not."""
    quantize_ptq(fp32_onnx, out, calib, cfg)
    acc = _acc(out, val)
    base = _acc(fp32_onnx, val)
    report = SensitivityReport(fp32_accuracy=base, per_node_drop={})
    report.steps.append({"kept_float": ", ".join(cfg.exclude) or "-", "accuracy": acc})
    if 100.0 * (base - acc) <= max_drop_points:
        report.final_accuracy, report.kept_float = acc, list(cfg.exclude)
        return report
    report.per_node_drop = layer_sensitivity(fp32_onnx, calib, val, cfg).per_node_drop
    order = sorted(report.per_node_drop, key=report.per_node_drop.get, reverse=True)
    kept: list[str] = list(cfg.exclude)
    for name in order[: max(1, len(order) // 2)]:
        trial = out.with_suffix(".trial.onnx")
        quantize_ptq(fp32_onnx, trial, calib, cfg.model_copy(update={'exclude': [*kept, name]}))
        trial_acc = _acc(trial, val)
        report.steps.append({"kept_float": ", ".join([*kept, name]), "accuracy": trial_acc})
        if trial_acc <= acc:  # no measurable gain: keep the faster model and stop
            trial.unlink()
            break
        kept.append(name)
        trial.replace(out)
        acc = trial_acc
        if 100.0 * (base - acc) <= max_drop_points:
            break
    report.kept_float, report.final_accuracy = kept, acc
    return report

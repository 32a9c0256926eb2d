"""Sensitivity-guided mixed precision: what does quantizing each operator type, and each layer, cost?

When the fully quantized model misses the accuracy budget on a validation subset (ONNX Runtime), two
searches keep parts of it float, one candidate at a time, each only while it measurably helps:
1. operator types without weights that the quantizer re-quantizes (Add, Concat, Mul, pooling, ...): every
   node of the type stays float. On the shipped baseline the residual adds alone cost 0.7 points on
   validation, which no per-layer analysis of the convolutions can find (README, int8 section);
2. the Conv/Gemm layers, each quantized alone (everything else float) and ranked by the accuracy it costs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from drivecompress.data.dataset import LabeledImages
from drivecompress.evaluate.predictor import OnnxPredictor, predict_all
from drivecompress.quant.ptq import PTQConfig, activation_op_types, preprocess, quantizable_nodes, quantize_ptq


@dataclass
class SensitivityReport:
    """Per-node accuracy drop (points of accuracy, fp32 minus quantized-alone), per operator type the drop of
    the int8 model with that type kept float, and what was kept float (node names / patterns, types)."""

    fp32_accuracy: float
    per_node_drop: dict[str, float]
    kept_float: list[str] = field(default_factory=list)
    per_op_type_drop: dict[str, float] = field(default_factory=dict)
    kept_float_ops: list[str] = field(default_factory=list)
    steps: list[dict[str, float | str]] = field(default_factory=list)
    final_accuracy: float = float("nan")


def _acc(path: Path, data: LabeledImages) -> float:
    return float((predict_all(OnnxPredictor(path), data.x).argmax(1) == data.y).mean())


def layer_sensitivity(fp32_onnx: Path, calib: np.ndarray, val: LabeledImages, cfg: PTQConfig,
                      base: float | None = None) -> SensitivityReport:
    """Quantize each Conv/Gemm alone and record the accuracy drop on ``val`` (``base``: the fp32 model's accuracy
    on ``val`` when the caller has it)."""
    base = _acc(fp32_onnx, val) if base is None else base
    with tempfile.TemporaryDirectory(prefix="dc-sens-") as tmp:
        names = quantizable_nodes(onnx.load(str(preprocess(fp32_onnx, Path(tmp) / "pre.onnx"))))
        drops = {}
        for name in names:
            out = Path(tmp) / "one.onnx"
            quantize_ptq(fp32_onnx, out, calib, cfg.model_copy(update={'exclude': []}), only_nodes=[name])
            drops[name] = 100.0 * (base - _acc(out, val))
    return SensitivityReport(fp32_accuracy=base, per_node_drop=drops)


def _describe(cfg: PTQConfig) -> str:
    return ", ".join([*cfg.exclude, *(f"every {t}" for t in cfg.exclude_ops)]) or "-"


def _keep_float_greedily(fp32_onnx: Path, out: Path, calib: np.ndarray, val: LabeledImages, cfg: PTQConfig,
                         key: str, order: list[str], acc: float, done: Callable[[float], bool],
                         report: SensitivityReport) -> tuple[PTQConfig, float]:
    """Add ``order``'s candidates to ``cfg.<key>`` ("exclude_ops" or "exclude") one at a time; a candidate stays
    float only if the model gets measurably better (every float operator costs speed), and the search stops at
    the first that does not, or when ``done(accuracy)``. The best model so far is kept at ``out``."""
    for name in order:
        if done(acc):
            break
        trial_cfg = cfg.model_copy(update={key: [*getattr(cfg, key), name]})
        trial = out.with_suffix(".trial.onnx")
        quantize_ptq(fp32_onnx, trial, calib, trial_cfg)
        trial_acc = _acc(trial, val)
        report.steps.append({"kept_float": _describe(trial_cfg), "accuracy": trial_acc})
        if trial_acc <= acc:
            trial.unlink()
            break
        cfg, acc = trial_cfg, trial_acc
        trial.replace(out)
    return cfg, acc


def op_type_sensitivity(fp32_onnx: Path, calib: np.ndarray, val: LabeledImages, cfg: PTQConfig,
                        base: float | None = None) -> dict[str, float]:
    """Per weightless operator type the graph has (and ``cfg`` does not already keep float): the accuracy drop
    (points, fp32 minus int8) of the model quantized with every node of that type kept float."""
    base = _acc(fp32_onnx, val) if base is None else base
    with tempfile.TemporaryDirectory(prefix="dc-sens-") as tmp:
        types = [t for t in activation_op_types(onnx.load(str(preprocess(fp32_onnx, Path(tmp) / "pre.onnx"))))
                 if t not in cfg.exclude_ops]
        drops = {}
        for t in types:
            out = Path(tmp) / "type.onnx"
            quantize_ptq(fp32_onnx, out, calib, cfg.model_copy(update={"exclude_ops": [*cfg.exclude_ops, t]}))
            drops[t] = 100.0 * (base - _acc(out, val))
    return drops


def mixed_precision(
    fp32_onnx: Path, out: Path, calib: np.ndarray, val: LabeledImages, cfg: PTQConfig, max_drop_points: float
) -> SensitivityReport:
    """Full int8 first; only if the drop exceeds the budget, keep operator types float (ranked by
    ``op_type_sensitivity``), then single layers (ranked by ``layer_sensitivity``, the worst half at most), each
    only while it measurably helps."""
    quantize_ptq(fp32_onnx, out, calib, cfg)
    acc = _acc(out, val)
    base = _acc(fp32_onnx, val)
    report = SensitivityReport(fp32_accuracy=base, per_node_drop={})
    report.steps.append({"kept_float": _describe(cfg), "accuracy": acc})

    def done(a: float) -> bool:
        return 100.0 * (base - a) <= max_drop_points

    if not done(acc):
        report.per_op_type_drop = op_type_sensitivity(fp32_onnx, calib, val, cfg, base)
        order = sorted(report.per_op_type_drop, key=report.per_op_type_drop.get)
        cfg, acc = _keep_float_greedily(fp32_onnx, out, calib, val, cfg, "exclude_ops", order, acc, done, report)
    if not done(acc):
        report.per_node_drop = layer_sensitivity(fp32_onnx, calib, val, cfg, base).per_node_drop
        order = sorted(report.per_node_drop, key=report.per_node_drop.get, reverse=True)
        cfg, acc = _keep_float_greedily(fp32_onnx, out, calib, val, cfg, "exclude",
                                        order[: max(1, len(order) // 2)], acc, done, report)
    report.kept_float, report.kept_float_ops, report.final_accuracy = list(cfg.exclude), list(cfg.exclude_ops), acc
    return report

"""Measure ONNX artifacts side by side in one run, so ratios compare like with like."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from drivecompress.data.dataset import LabeledImages
from drivecompress.evaluate.complexity import onnx_params, size_on_disk, zipped_size
from drivecompress.evaluate.latency import SpeedConfig, measure_speed
from drivecompress.evaluate.measure import evaluate_predictor
from drivecompress.evaluate.predictor import OnnxPredictor

SPEED_KEYS = ("latency_ms_p50", "latency_ms_p99", "throughput_ips")


def measure_onnx(path: Path, test: LabeledImages, speed: SpeedConfig | None = None,
                 safety_critical: Iterable[int] = (), num_classes: int | None = None) -> dict[str, Any]:
    """DESIGN.md metrics of one ONNX file on ONNX Runtime: accuracy block, size, stored params, speed."""
    m = evaluate_predictor(OnnxPredictor(path), test, safety_critical=safety_critical, num_classes=num_classes)
    m.update({"size_bytes": size_on_disk(path), "params": onnx_params(path),
              "zipped_size_bytes": zipped_size(path.read_bytes())})
    m.update(measure_speed(path, speed, tuple(test.x.shape[3:]) + tuple(test.x.shape[1:3])))
    return m


def ratios(base: dict[str, Any], new: dict[str, Any]) -> dict[str, float]:
    """Speed-up and shrink factors (>1 is better) and accuracy delta in points."""
    out = {"accuracy_delta_points": 100.0 * (new["accuracy"] - base["accuracy"])}
    for k in ("latency_ms_p50", "latency_ms_p99", "size_bytes"):
        if base.get(k) and new.get(k):
            out[f"{k}_ratio"] = base[k] / new[k]
    if base.get("throughput_ips") and new.get("throughput_ips"):
        out["throughput_ratio"] = new["throughput_ips"] / base["throughput_ips"]
    return out


def speed_verdict(base: dict[str, Any], new: dict[str, Any], label: str = "int8") -> str:
    """Plain words on whether the new model is actually faster on this runtime and machine."""
    r = base["latency_ms_p50"] / new["latency_ms_p50"]
    t = new["throughput_ips"] / base["throughput_ips"]
    if r >= 1.05:
        return f"{label} is {r:.2f}x faster than the fp32 baseline at batch 1 (1 thread) and {t:.2f}x in throughput"
    return (f"{label} is NOT faster than the fp32 baseline at batch 1 (1 thread): {r:.2f}x latency ratio, "
            f"{t:.2f}x throughput")

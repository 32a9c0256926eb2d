"""``drivecompress quantize`` (provisional: the same steps run from recipes once the runner lands)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from drivecompress.cli import command


@command("quantize", "int8-quantize MODEL for ONNX Runtime and measure it against its fp32 ONNX twin in the "
         "same run. --method ptq: static post-training quantization (QDQ, per-channel int8 weights, calibrated "
         "uint8 activations); --method qat: quantization-aware fine-tuning exported with the learned "
         "quantization parameters. Writes OUT/baseline.onnx, OUT/model.onnx, OUT/quant_report.json.")
def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="checkpoint folder or 'baseline'")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--method", choices=["ptq", "qat"], default="ptq")
    p.add_argument("--calibration", choices=["minmax", "percentile", "entropy"], default="minmax",
                   help="PTQ activation-range method (default minmax, chosen by benchmarks/bench_quant.py)")
    p.add_argument("--calibration-images", type=int, default=512, help="training images used to calibrate")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="keep nodes matching this name/glob in float (repeatable), e.g. '*classifier*'")
    p.add_argument("--max-drop", type=float, metavar="POINTS",
                   help="PTQ accuracy budget: run per-layer sensitivity and keep the worst layers in float "
                   "until the validation drop is within POINTS")
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--qat-lr", type=float, default=0.002)
    p.add_argument("--subset", type=int, help="measure on N test images (default: the full test set)")
    p.add_argument("--train-subset", type=int, help="QAT on N training images (quick runs; default all)")
    p.add_argument("--runs", type=int, default=500, help="timed batch-1 runs per model (default 500)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT/model.onnx if present")


@_args.bind
def _run(a: argparse.Namespace) -> dict[str, Any]:
    from drivecompress.errors import BadInputError
    from drivecompress.evaluate.latency import SpeedConfig
    from drivecompress.quant.ptq import PTQConfig
    from drivecompress.quant.run import QuantJob, run_quantization

    if a.calibration_images < 1 or a.qat_epochs < 1 or a.runs < 1:
        raise BadInputError("--calibration-images, --qat-epochs and --runs must be >= 1")
    job = QuantJob(
        model=a.model, out=a.out, method=a.method,
        ptq=PTQConfig(calibration=a.calibration, calibration_images=a.calibration_images, exclude=tuple(a.exclude)),
        max_drop_points=a.max_drop, qat_epochs=a.qat_epochs, qat_lr=a.qat_lr, data=a.data, device=a.device,
        test_subset=a.subset, train_subset=a.train_subset, speed=SpeedConfig(runs=a.runs), overwrite=a.overwrite,
    )
    rep = run_quantization(job)
    keys = ("accuracy", "min_safety_critical_recall", "size_bytes", "latency_ms_p50", "latency_ms_p99",
            "throughput_ips")
    return {
        "out": str(a.out),
        "method": rep["method"],
        **{f"fp32.{k}": rep["baseline"][k] for k in keys},
        **{f"int8.{k}": rep["final"][k] for k in keys},
        **rep["ratios"],
        "verdict": rep["verdict"],
        "kept_float": rep["details"].get("sensitivity", {}).get("kept_float", rep["details"].get("excluded_nodes")),
    }

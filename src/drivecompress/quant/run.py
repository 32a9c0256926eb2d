"""Quantize a model end to end (provisional ``drivecompress quantize``; becomes a recipe step later):
export the fp32 twin, quantize (PTQ or QAT), and measure both on ONNX Runtime in the same run."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from drivecompress.data.dataset import make_splits
from drivecompress.data.gtsrb import load_gtsrb
from drivecompress.data.transforms import deploy_input
from drivecompress.errors import BadInputError
from drivecompress.evaluate.compare import measure_onnx, ratios, speed_verdict
from drivecompress.evaluate.complexity import count_macs
from drivecompress.evaluate.latency import SpeedConfig
from drivecompress.evaluate.loading import load_model_arg
from drivecompress.evaluate.machine import machine_info
from drivecompress.export.onnx import export_onnx
from drivecompress.quant.ptq import PTQConfig, quantize_ptq
from drivecompress.quant.qat import QAT_DEFAULTS, export_qat, qat_finetune
from drivecompress.quant.sensitivity import mixed_precision
from drivecompress.utils.device import select_device
from drivecompress.utils.io import atomic_write_json


@dataclass(frozen=True)
class QuantJob:
    """One quantization run."""

    model: str
    out: Path
    method: Literal["ptq", "qat"] = "ptq"
    ptq: PTQConfig = field(default_factory=PTQConfig)
    max_drop_points: float | None = None
    qat_epochs: int = QAT_DEFAULTS.epochs
    qat_lr: float = QAT_DEFAULTS.lr
    data: str | None = None
    device: str | None = None
    test_subset: int | None = None
    train_subset: int | None = None
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    overwrite: bool = False
    seed: int = 0


def run_quantization(job: QuantJob) -> dict[str, Any]:
    """Write ``out/baseline.onnx``, ``out/model.onnx`` (int8) and ``out/quant_report.json``."""
    final = job.out / "model.onnx"
    if final.exists() and not job.overwrite:
        raise BadInputError(f"{final}: already exists; choose another --out or pass --overwrite")
    loaded = load_model_arg(job.model)
    if loaded.module is None:
        raise BadInputError(f"{job.model}: quantization needs a checkpoint folder or 'baseline', not an .onnx file")
    data = load_gtsrb(job.data)
    splits = make_splits(data, seed=job.seed)
    test = splits.test.head(job.test_subset, seed=job.seed)
    calib = deploy_input(splits.train.head(job.ptq.calibration_images, seed=job.seed).x)
    check = deploy_input(test.x[:64])
    job.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base_export = export_onnx(loaded.module, job.out / "baseline.onnx", check)
    details: dict[str, Any] = {"baseline_onnx_max_abs_diff": base_export.max_abs_diff}
    if job.method == "ptq":
        if job.max_drop_points is not None:
            val = splits.val.head(2000, seed=job.seed)
            rep = mixed_precision(base_export.path, final, calib, val, job.ptq, job.max_drop_points)
            details["sensitivity"] = dataclasses.asdict(rep)
        else:
            res = quantize_ptq(base_export.path, final, calib, job.ptq)
            details["excluded_nodes"] = res.excluded_nodes
    else:
        cfg = dataclasses.replace(QAT_DEFAULTS, epochs=job.qat_epochs, lr=job.qat_lr, seed=job.seed)
        train = splits.train.head(job.train_subset, seed=job.seed)
        qmodel, result = qat_finetune(loaded.module, train, splits.val, cfg, select_device(job.device))
        details["qat"] = {"best_val_accuracy_fakequant": result.best_val_accuracy, "epochs": job.qat_epochs,
                          "seconds": round(result.seconds, 1)}
        details["qat_export"] = export_qat(qmodel, final, check)
    seconds = time.perf_counter() - t0
    base_m = measure_onnx(job.out / "baseline.onnx", test, job.speed)
    new_m = measure_onnx(final, test, job.speed)
    macs = count_macs(loaded.module)
    base_m["macs"] = new_m["macs"] = macs
    report = {
        "method": job.method,
        "model": str(loaded.source),
        "config": {"ptq": dataclasses.asdict(job.ptq), "max_drop_points": job.max_drop_points,
                   "qat_epochs": job.qat_epochs, "qat_lr": job.qat_lr, "test_images": len(test)},
        "baseline": base_m,
        "final": new_m,
        "ratios": ratios(base_m, new_m),
        "verdict": speed_verdict(base_m, new_m),
        "details": details,
        "seconds": round(seconds, 1),
        "machine": machine_info(),
    }
    atomic_write_json(job.out / "quant_report.json", report)
    return report

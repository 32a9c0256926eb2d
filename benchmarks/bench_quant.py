"""fp32 vs PTQ (each calibration method) vs QAT, measured side by side in one run on ONNX Runtime.

    python benchmarks/bench_quant.py [--model baseline] [--qat-epochs 2] [--subset N] [--out runs/bench_quant]
                                     [--exclude-ops Add]

Prints a table (accuracy, min safety-critical recall, size, batch-1 p50/p99 with one thread, batch-64
throughput with all threads, and ratios against fp32) and writes it as JSON and Markdown into --out; then the
batch-1 latency of every model again in interleaved rounds (``side_by_side``), the ratio to trust on a noisy
machine. ``--exclude-ops`` adds a percentile PTQ whose nodes of those operator types stay float (the default
recipe keeps the residual adds float).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import print_table, save_results
from rich.console import Console

from drivecompress.data.api import Data
from drivecompress.data.transforms import deploy_input
from drivecompress.evaluate.compare import measure_onnx
from drivecompress.evaluate.latency import SpeedConfig, side_by_side
from drivecompress.evaluate.loading import load_model_arg
from drivecompress.export.onnx import export_onnx
from drivecompress.quant.ptq import PTQConfig, quantize_ptq
from drivecompress.quant.qat import QATConfig, export_qat, qat_finetune
from drivecompress.utils.device import select_device


def markdown(rows: list[dict], machine: dict) -> str:
    head = "| model | accuracy | Δ pts | min safety recall | size KB | p50 ms | p99 ms | p50 speed-up | thr. img/s |"
    lines = [head, "|" + "---|" * 9]
    base = rows[0]
    for r in rows:
        lines.append(
            f"| {r['name']} | {100 * r['accuracy']:.2f}% | {100 * (r['accuracy'] - base['accuracy']):+.2f} | "
            f"{r['min_safety_critical_recall']:.3f} | {r['size_bytes'] / 1024:.0f} | {r['latency_ms_p50']:.3f} | "
            f"{r['latency_ms_p99']:.3f} | {base['latency_ms_p50'] / r['latency_ms_p50']:.2f}x | "
            f"{r['throughput_ips']:.0f} |"
        )
    lines.append(f"\nMachine: {machine['cpu']}, {machine['cores']} cores, flags {' '.join(machine['cpu_flags'])}, "
                 f"onnxruntime {machine['onnxruntime']}, torch {machine['torch']}.")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="baseline")
    ap.add_argument("--data")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_quant"))
    ap.add_argument("--subset", type=int, help="test images (default: all 12,630)")
    ap.add_argument("--qat-epochs", type=int, default=QATConfig().epochs, help="0 skips QAT")
    ap.add_argument("--calibration-images", type=int, default=512)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--exclude-ops", nargs="+", metavar="OP", help="also a percentile PTQ keeping these operator "
                    "types float, e.g. Add")
    a = ap.parse_args()
    err = Console(stderr=True)
    loaded = load_model_arg(a.model)
    data = Data.from_npz(a.data)
    splits = data.splits
    test = splits.test.head(a.subset)
    calib = deploy_input(splits.train.head(a.calibration_images).x)
    a.out.mkdir(parents=True, exist_ok=True)
    fp32 = export_onnx(loaded.module, a.out / "fp32.onnx", deploy_input(test.x[:64]))
    models = {"fp32": fp32.path}
    for method in ("minmax", "percentile", "entropy"):
        err.print(f"PTQ {method} ...")
        cfg = PTQConfig(calibration=method, calibration_images=a.calibration_images)
        models[f"ptq-{method}"] = quantize_ptq(fp32.path, a.out / f"ptq-{method}.onnx", calib, cfg).path
    if a.exclude_ops:
        name = f"ptq-percentile, {'+'.join(a.exclude_ops)} float"
        cfg = PTQConfig(calibration_images=a.calibration_images, exclude_ops=a.exclude_ops)
        models[name] = quantize_ptq(fp32.path, a.out / "ptq-excluded-ops.onnx", calib, cfg).path
    if a.qat_epochs > 0:
        cfg = QATConfig(epochs=a.qat_epochs).train_config()
        q, _res = qat_finetune(loaded.module, splits.train, splits.val, cfg, select_device(None))
        export_qat(q, a.out / "qat.onnx", deploy_input(test.x[:64]))
        models["qat"] = a.out / "qat.onnx"
    speed = SpeedConfig(runs=a.runs, warmup=100)
    rows = []
    for name, path in models.items():
        err.print(f"measuring {name} ...")
        m = measure_onnx(path, test, speed, data.safety_critical, data.num_classes)
        rows.append({"name": name, **{k: v for k, v in m.items() if k not in ("per_class_recall", "predictions")}})
    b = rows[0]
    print_table(f"int8 on ONNX Runtime vs fp32 ({len(test)} test images)",
                ("model", "accuracy", "Δ pts", "min safety recall", "size KB", "p50 ms", "p99 ms", "speed-up",
                 "img/s"),
                [(r["name"], f"{100 * r['accuracy']:.2f}%", f"{100 * (r['accuracy'] - b['accuracy']):+.2f}",
                  f"{r['min_safety_critical_recall']:.3f}", f"{r['size_bytes'] / 1024:.0f}",
                  f"{r['latency_ms_p50']:.3f}", f"{r['latency_ms_p99']:.3f}",
                  f"{b['latency_ms_p50'] / r['latency_ms_p50']:.2f}x", f"{r['throughput_ips']:.0f}") for r in rows])
    err.print("batch-1 latency again, all models in interleaved rounds ...")
    sbs = side_by_side(models, tuple(deploy_input(test.x[:1]).shape[1:]), runs=a.runs, rounds=5)
    f32 = sbs["fp32"]["latency_ms_p50"]
    print_table("batch-1 latency, one thread, interleaved rounds (one run, side by side)",
                ("model", "p50 ms", "p99 ms", "speed-up", "round medians ms"),
                [(k, f"{v['latency_ms_p50']:.3f}", f"{v['latency_ms_p99']:.3f}", f"{f32 / v['latency_ms_p50']:.2f}x",
                  " ".join(f"{t:.3f}" for t in v["round_medians_ms"])) for k, v in sbs.items()])
    for r in rows:
        r["side_by_side"] = sbs[r["name"]]
    machine = save_results(a.out, rows)
    Console().print(f"machine: {machine['cpu']} | flags: {' '.join(machine['cpu_flags'])}")
    (a.out / "results.md").write_text(markdown(rows, machine) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Distillation ablation in one run, equal epochs and seed: the same student trained with plain
cross-entropy vs soft-target KD vs KD + feature transfer, from the same teacher.

    python benchmarks/bench_distill.py [--teacher baseline] [--arch resnet --width 0.5] [--epochs 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from _common import print_table, save_results
from rich.console import Console

from drivecompress.data.api import Data
from drivecompress.distill.student import StudentConfig, distill, student_spec
from drivecompress.evaluate.complexity import count_macs
from drivecompress.evaluate.loading import load_model_arg
from drivecompress.models import build_model
from drivecompress.train.loop import evaluate_accuracy
from drivecompress.utils.device import select_device


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="baseline")
    ap.add_argument("--arch", default="resnet")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train-subset", type=int)
    ap.add_argument("--feature-pair", nargs=2, default=["blocks.3", "blocks.3"], metavar=("STUDENT", "TEACHER"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench_distill"))
    a = ap.parse_args()
    dev = select_device(None)
    teacher = load_model_arg(a.teacher).module
    data = Data.from_npz()
    splits = data.splits
    spec = student_spec(StudentConfig(arch=a.arch, width=a.width), teacher, data)
    rows = [{"name": "teacher", "macs": count_macs(teacher, data.input_shape),
             "accuracy": evaluate_accuracy(teacher, splits.test, dev)}]
    variants = {"cross-entropy": {"mode": "none"}, "soft KD": {"mode": "soft"},
                "soft KD + features": {"mode": "soft", "feature_pairs": [tuple(a.feature_pair)]}}
    for name, kw in variants.items():
        torch.manual_seed(0)
        student = build_model(spec)
        cfg = StudentConfig(arch=a.arch, width=a.width, epochs=a.epochs, train_subset=a.train_subset, **kw)
        res = distill(student, teacher, data, cfg, device=dev)
        rows.append({"name": name, "macs": count_macs(student, data.input_shape), "val_accuracy": res.best_val_accuracy,
                     "accuracy": evaluate_accuracy(student.cpu().eval(), splits.test, dev)})
        Console(stderr=True).print(f"{name}: test {rows[-1]['accuracy']:.4f}")
    b = rows[0]
    print_table(f"distillation ablation: {a.arch} x{a.width} student, {a.epochs} epochs, seed 0",
                ("model", "MACs", "MACs vs teacher", "test accuracy", "Δ vs teacher"),
                [(r["name"], f"{r['macs'] / 1e6:.1f}M", f"{r['macs'] / b['macs']:.2f}", f"{100 * r['accuracy']:.2f}%",
                  f"{100 * (r['accuracy'] - b['accuracy']):+.2f}") for r in rows], width=120)
    save_results(a.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Structured pruning: MACs / params / accuracy / ONNX Runtime latency for several ratios and each importance
criterion, side by side in one run (so the defaults are backed by numbers).

    python benchmarks/bench_prune.py [--model baseline] [--ratios 0.25 0.4] [--round-to 16 8 4]
                                     [--finetune-epochs 1 --train-subset 8000] [--subset N]

Every importance criterion at every ratio (channel counts rounded to the first --round-to), plus L2 rows with
the other --round-to values to show what channel rounding does to latency. Accuracy is measured right after
pruning and, with --finetune-epochs N, after N epochs of plain fine-tuning (same seed for every row; the
recipes recover with distillation, which the table leaves out to stay comparable). Latency: fp32 ONNX,
batch 1, one thread.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch
from _common import print_table, save_results
from rich.console import Console

from drivecompress.data.api import Data
from drivecompress.data.transforms import deploy_input
from drivecompress.evaluate.complexity import count_macs, count_params
from drivecompress.evaluate.latency import SpeedConfig, measure_speed
from drivecompress.evaluate.loading import load_model_arg
from drivecompress.export.onnx import export_onnx
from drivecompress.prune.structured import PruneConfig, prune_structured
from drivecompress.train.loop import TrainConfig, evaluate_accuracy, fit
from drivecompress.utils.device import select_device


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="baseline")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.4])
    ap.add_argument("--round-to", type=int, nargs="+", default=[16, 8, 4])
    ap.add_argument("--importance", nargs="+", default=["l1", "l2", "taylor", "bn_scale"])
    ap.add_argument("--finetune-epochs", type=int, default=0)
    ap.add_argument("--train-subset", type=int)
    ap.add_argument("--subset", type=int, help="test images (default all)")
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_prune"))
    a = ap.parse_args()
    dev = select_device(None)
    base = load_model_arg(a.model).module
    data = Data.from_npz()
    splits, shape = data.splits, data.input_shape
    test = splits.test.head(a.subset)
    check = deploy_input(test.x[:32])
    speed = SpeedConfig(runs=a.runs, warmup=50, throughput_seconds=1.0)
    rows = []

    def measure(name: str, model: torch.nn.Module, ratio: float, after_prune: float | None,
                round_to: int | None = None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(model, Path(tmp) / "m.onnx", check).path
            s = measure_speed(path, speed, shape)
        sp = model.spec()
        widths = "/".join(str(w) for w in [sp.get("stem", "")] + [st["out"] for st in sp.get("stages", [])])
        rows.append({"name": name, "ratio": ratio, "round_to": round_to, "widths": widths,
                     "macs": count_macs(model, shape), "params": count_params(model),
                     "acc_after_prune": after_prune, "accuracy": evaluate_accuracy(model, test, dev), **s})
        Console(stderr=True).print(f"{name} r={ratio} round_to={round_to} {widths}: {rows[-1]['accuracy']:.4f}")

    measure("baseline", base, 0.0, None)
    runs = [(imp, r, a.round_to[0]) for imp in a.importance for r in a.ratios]
    runs += [("l2", r, rt) for rt in a.round_to[1:] for r in a.ratios]
    for imp, r, rt in runs:
        m = copy.deepcopy(base)
        prune_structured(m, PruneConfig(ratio=r, importance=imp, round_to=rt), data.example_input(),
                         splits.train.head(256))
        after = evaluate_accuracy(m, test, dev)
        if a.finetune_epochs:
            fit(m, splits.train.head(a.train_subset), splits.val,
                TrainConfig(epochs=a.finetune_epochs, lr=0.01, schedule="cosine", warmup_frac=0.0), dev)
        measure(imp, m.cpu().eval(), r, after, rt)
    b = rows[0]
    print_table(f"structured pruning ({len(test)} test images, fine-tune {a.finetune_epochs} epochs)",
                ("importance", "ratio", "round_to", "widths", "MACs", "params", "acc pruned", "acc final",
                 "p50 ms", "speed-up"),
                [(r["name"], f"{r['ratio']:.2f}", str(r["round_to"] or "-"), r["widths"], f"{r['macs'] / 1e6:.1f}M",
                  f"{r['params'] / 1e3:.0f}k",
                  "-" if r["acc_after_prune"] is None else f"{100 * r['acc_after_prune']:.2f}%",
                  f"{100 * r['accuracy']:.2f}%", f"{r['latency_ms_p50']:.3f}",
                  f"{b['latency_ms_p50'] / r['latency_ms_p50']:.2f}x") for r in rows])
    save_results(a.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

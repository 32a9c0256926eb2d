"""Write MODEL_CARD.md for a checkpoint: how it was trained and what it measures, all measured now.

A hand-written "## Known shortfalls" section already in the card is kept, below the measured part.

    .venv/bin/python scripts/write_model_card.py baseline
"""

from __future__ import annotations

import json
import sys

from drivecompress.data.classes import CLASS_NAMES, SAFETY_CRITICAL
from drivecompress.data.dataset import LabeledImages, make_splits
from drivecompress.data.gtsrb import load_gtsrb
from drivecompress.evaluate.latency import SpeedConfig
from drivecompress.evaluate.loading import load_model_arg
from drivecompress.evaluate.measure import bench, evaluate_predictor
from drivecompress.train.loop import evaluate_accuracy

HAND_WRITTEN = "## Known shortfalls"


def main(arg: str) -> int:
    model = load_model_arg(arg)
    meta = model.meta or {}
    tr = meta.get("training", {})
    data = load_gtsrb()
    test = LabeledImages.of(data.x_test, data.y_test)
    m = evaluate_predictor(model.predictor(), test, safety_critical=SAFETY_CRITICAL, num_classes=len(CLASS_NAMES))
    val_acc = evaluate_accuracy(model.module, make_splits(data, seed=tr.get("config", {}).get("seed", 0)).val, "cpu")
    speed = bench(model, test.head(64), SpeedConfig(runs=1000, warmup=100))
    cfg = tr.get("config", {})
    worst = sorted(range(43), key=lambda c: m["per_class_recall"][c])[:5]
    lines = [
        "# Model card: drivecompress shipped baseline",
        "",
        f"A `{meta['spec']['arch']}` (width {cfg.get('width')}) traffic-sign classifier for GTSRB (43 classes, "
        "32x32 RGB in [0, 1], normalization inside the model), trained with `drivecompress train` itself.",
        "",
        "## How it was made",
        "",
        f"- Command: `{tr.get('command')}`",
        f"- Seed: {cfg.get('seed')}; epochs: {cfg.get('epochs')}; optimizer: {cfg.get('optimizer')} "
        f"(peak lr {cfg.get('lr')}, {cfg.get('schedule')}, weight decay {cfg.get('weight_decay')}, label smoothing "
        f"{cfg.get('label_smoothing')}, bf16 autocast: {cfg.get('amp')}); "
        + (f"weights: stochastic weight averaging of the last {cfg['swa_epochs']} epochs at constant lr "
           f"{cfg.get('swa_lr')} (BatchNorm statistics recomputed on augmented training images)"
           if cfg.get("swa_epochs") else f"best epoch on validation: {meta['metrics'].get('best_epoch')}"),
        f"- Wall time of training: {tr.get('seconds', 0) / 60:.1f} min on {speed['machine']['cpu']} "
        f"({speed['machine']['cores']} cores), torch {tr.get('torch')}",
        "- Data: track-aware split of the training set (10% of the physical signs held out for validation), "
        f"per-image contrast normalization in the model, augmentation: scale "
        f"{cfg.get('augment_cfg', {}).get('scale_min', 0.55)}-{cfg.get('augment_cfg', {}).get('scale_max', 1.1)} "
        "and rotation ±12° about the "
        "sign anchored at the top-left corner with anti-aliased shrinking, ±1.5 px shift, brightness/gamma/"
        "colour gain, occasional mild blur; no flips."
        + (f" Rare classes oversampled: each image drawn with probability ∝ count(class)^-{cfg['class_balance']}."
           if cfg.get("class_balance") else ""),
        "",
        "## Measured (full GTSRB test set, 12,630 images)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| top-1 accuracy | {100 * m['accuracy']:.2f}% |",
        f"| validation accuracy (track-held-out) | {100 * val_acc:.2f}% |",
        f"| min recall over safety-critical classes | {100 * m['min_safety_critical_recall']:.2f}% |",
        f"| expected calibration error (15 bins) | {m['ece']:.4f} |",
        f"| parameters | {speed['params']:,} |",
        f"| MACs (batch 1) | {speed['macs']:,} |",
        f"| size on disk (safetensors) | {speed['size_bytes'] / 1024:,.0f} KiB |",
        f"| fp32 ONNX size | {speed['onnx_size_bytes'] / 1024:,.0f} KiB (parity vs PyTorch: max abs diff "
        f"{speed['onnx_max_abs_diff']:.1e}) |",
        f"| ONNX Runtime latency, batch 1, 1 thread | p50 {speed['latency_ms_p50']:.3f} ms, "
        f"p99 {speed['latency_ms_p99']:.3f} ms |",
        f"| ONNX Runtime throughput, batch 64, {speed['machine']['cores']} threads | "
        f"{speed['throughput_ips']:,.0f} images/s |",
        "",
        "Accuracy by sign size (the side of the sign in pixels; this npz keeps small signs small):",
        "",
        "| sign size | test images | accuracy |",
        "|---|---|---|",
        *[f"| {k} | {v['count']:,} | {100 * v['accuracy']:.2f}% |" for k, v in m["accuracy_by_size"].items()],
        "",
        "Lowest per-class recall: " + ", ".join(
            f"{c} {CLASS_NAMES[c]}{' (safety-critical)' if c in SAFETY_CRITICAL else ''} "
            f"{100 * m['per_class_recall'][c]:.1f}%" for c in worst) + ".",
        "",
        f"CPU flags recorded with the benchmark: {' '.join(speed['machine']['cpu_flags'])}; onnxruntime "
        f"{speed['machine']['onnxruntime']}.",
        "",
    ]
    out = model.source / "MODEL_CARD.md"
    text = "\n".join(lines)
    # Hand-written findings (everything from HAND_WRITTEN on) survive a re-measure.
    if out.exists() and HAND_WRITTEN in (old := out.read_text()):
        text += "\n" + old[old.index(HAND_WRITTEN):]
    out.write_text(text)
    (model.source / "measurements.json").write_text(json.dumps({"eval": m, "val_accuracy": val_acc,
                                                                 "bench": speed}, indent=2))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "baseline"))

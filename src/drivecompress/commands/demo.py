"""``drivecompress demo``: the main job on the shipped baseline.

Until the recipe runner lands it evaluates and benchmarks the baseline on the full test set (fp32 PyTorch
and its exported ONNX twin), so a newcomer sees the numbers every later compression is compared against.
"""

from __future__ import annotations

import argparse
from typing import Any

from drivecompress.cli import command


@command("demo", "Run the main job on the shipped baseline: full-test-set evaluation and an ONNX Runtime "
         "benchmark (what every compressed model is compared against).")
def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="baseline", help="model to demo (default: the shipped baseline)")


@_args.bind
def _run(a: argparse.Namespace) -> dict[str, Any]:
    from rich.console import Console

    from drivecompress.data.dataset import LabeledImages
    from drivecompress.data.gtsrb import load_gtsrb
    from drivecompress.evaluate.loading import load_model_arg
    from drivecompress.evaluate.measure import bench, evaluate_predictor

    err = Console(stderr=True)
    model = load_model_arg(a.model)
    data = load_gtsrb(a.data)
    test = LabeledImages.of(data.x_test, data.y_test)
    err.print(f"[bold]demo[/]: evaluating {model.source} on {len(test)} test images ...")
    metrics = evaluate_predictor(model.predictor(), test)
    err.print("[bold]demo[/]: benchmarking on ONNX Runtime (batch 1 / 1 thread, batch 64 / all threads) ...")
    speed = bench(model, test.head(64))
    by_size = {f"accuracy {k} (n={v['count']})": v["accuracy"] for k, v in metrics["accuracy_by_size"].items()}
    return {
        "model": str(model.source),
        "accuracy": metrics["accuracy"],
        **by_size,
        "min_safety_critical_recall": metrics["min_safety_critical_recall"],
        "ece": metrics["ece"],
        **{k: v for k, v in speed.items() if k != "machine"},
        "cpu": speed["machine"]["cpu"],
        "cpu_flags": " ".join(speed["machine"]["cpu_flags"]),
    }

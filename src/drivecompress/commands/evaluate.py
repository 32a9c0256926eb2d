"""``drivecompress eval`` and ``drivecompress bench``."""

from __future__ import annotations

import argparse
from typing import Any

from drivecompress.commands.base import command


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="checkpoint folder, .onnx file, 'baseline' or 'searched'")


@command("eval", "Evaluate MODEL on the GTSRB test set: accuracy, per-class recall (safety-critical classes "
         "flagged), ECE, accuracy by sign size, params, MACs, size on disk.")
def _eval_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("--subset", type=int, help="evaluate on a random subset of N test images (default: all)")
    p.add_argument("--batch-size", type=int, default=512)


@_eval_args.bind
def _eval(a: argparse.Namespace) -> dict[str, Any]:
    from drivecompress.data.api import Data
    from drivecompress.errors import BadInputError
    from drivecompress.evaluate.loading import load_model_arg
    from drivecompress.evaluate.measure import complexity, evaluate_predictor
    from drivecompress.utils.device import select_device

    if (a.subset is not None and a.subset < 1) or a.batch_size < 1:
        raise BadInputError("--subset and --batch-size must be >= 1")
    device = select_device(a.device)
    model = load_model_arg(a.model)
    data = Data.from_npz(a.data)
    model.check_against(data)
    test = data.test.head(a.subset)
    metrics = evaluate_predictor(model.predictor(device=device), test, a.batch_size, data.safety_critical,
                                 data.num_classes)
    metrics.pop("predictions")
    return {"model": str(model.source), **{k: metrics[k] for k in ("accuracy", "images")},
            **complexity(model, data.input_shape),
            **{k: v for k, v in metrics.items() if k not in ("accuracy", "images")}}


@command("bench", "Benchmark MODEL on ONNX Runtime: batch-1 latency p50/p99 with one thread (after warm-up) "
         "and batch-64 throughput with all threads; checkpoints are exported to ONNX first (parity checked). "
         "The CPU model and its flags are recorded.")
def _bench_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("--runs", type=int, default=500, help="timed batch-1 runs (default 500)")
    p.add_argument("--warmup", type=int, default=50, help="untimed warm-up runs (default 50)")
    p.add_argument("--seconds", type=float, default=3.0, help="throughput measuring time (default 3 s)")


@_bench_args.bind
def _bench(a: argparse.Namespace) -> dict[str, Any]:
    from drivecompress.data.api import Data
    from drivecompress.errors import BadInputError
    from drivecompress.evaluate.latency import SpeedConfig
    from drivecompress.evaluate.loading import load_model_arg
    from drivecompress.evaluate.measure import bench
    from drivecompress.utils.device import select_device

    if a.runs < 1 or a.warmup < 0 or not 0 < a.seconds < 3600:  # NaN fails the comparison too
        raise BadInputError(f"--runs must be >= 1, --warmup >= 0, --seconds in (0, 3600) (got {a.runs}, "
                            f"{a.warmup}, {a.seconds})")
    select_device(a.device)  # validates --device; latency is always measured on the CPU runtime
    model = load_model_arg(a.model)
    data = Data.from_npz(a.data)
    model.check_against(data)
    cfg = SpeedConfig(warmup=a.warmup, runs=a.runs, throughput_seconds=a.seconds)
    return {"model": str(model.source), **bench(model, data.test.head(64), cfg, data.input_shape)}

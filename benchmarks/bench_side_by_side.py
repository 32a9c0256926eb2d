"""Batch-1 latency of several ONNX files side by side (interleaved rounds, 1 thread), as ratios to the first:
the speed-up figures quoted beside the gate's verdicts (docs/shipped-models.md, docs/demo.md).

    python benchmarks/bench_side_by_side.py baseline=runs/demo/baseline.onnx demo=runs/demo/model.onnx \\
        searched=searched/model.onnx --runs 2000

Run it with nothing else on the machine; the first file is the reference (the baseline's fp32 ONNX).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import print_table

from drivecompress.evaluate.latency import side_by_side
from drivecompress.evaluate.machine import machine_info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", metavar="NAME=FILE.onnx", help="the first is the reference")
    ap.add_argument("--runs", type=int, default=2000, help="calls per model and round")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    paths = {m.split("=", 1)[0]: Path(m.split("=", 1)[1]) for m in a.models}
    r = side_by_side(paths, (3, 32, 32), runs=a.runs, rounds=a.rounds)
    ref = r[next(iter(paths))]["latency_ms_p50"]
    mach = machine_info()
    print_table(f"Batch-1 p50, 1 thread, {a.rounds} interleaved rounds of {a.runs} calls ({mach['cpu']}, "
                f"{' '.join(mach['cpu_flags'])})", ["model", "p50 ms", "speed-up", "round medians ms"],
                [[k, f"{v['latency_ms_p50']:.3f}", f"{ref / v['latency_ms_p50']:.2f}x",
                  " ".join(f"{x:.3f}" for x in v.get("round_medians_ms", []))] for k, v in r.items()])


if __name__ == "__main__":
    main()

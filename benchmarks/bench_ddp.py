"""Data-parallel scaling on this machine: the same training run (same global batch, seed, data) with
1 process x T threads and with N processes x T/N threads (torchrun, gloo on loopback), one after the other.

    python benchmarks/bench_ddp.py --epochs 2 --subset 8000

Reports wall time per epoch (from each run's own training history) and validation/test accuracy. On a
2-core machine the two layouts share the same two cores: the question answered is whether data parallelism
costs or gains anything at equal hardware, not a speed-up from more hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import print_table, save_results


def run(out: Path, nproc: int, threads: int, a: argparse.Namespace) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "drivecompress", "train", "--out", str(out), "--arch", a.arch, "--width", str(a.width),
           "--epochs", str(a.epochs), "--subset", str(a.subset), "--seed", "0", "--overwrite", "--json",
           "--nproc-per-node", str(nproc)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    doc = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    return {"layout": f"{nproc} process x {threads} thread{'s' if threads > 1 else ''}", "processes": nproc,
            "threads": threads, "wall_seconds": round(wall, 1), "train_seconds": doc["seconds"],
            "seconds_per_epoch": round(doc["seconds"] / a.epochs, 1), "val_accuracy": doc["val_accuracy"],
            "test_accuracy": doc["test_accuracy"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--subset", type=int, default=8000)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_ddp"))
    a = ap.parse_args()
    rows = [run(a.out / "p1", 1, a.cores, a), run(a.out / f"p{a.cores}", a.cores, 1, a)]
    base = rows[0]["seconds_per_epoch"]
    for r in rows:
        r["speedup_vs_1_process"] = round(base / r["seconds_per_epoch"], 2)
    save_results(a.out, rows)
    print_table(f"Data-parallel training, {a.arch} x{a.width}, {a.subset} images, {a.epochs} epochs, global batch 128",
                ["layout", "s/epoch", "speed-up", "val acc", "test acc", "wall s"],
                [[r["layout"], f"{r['seconds_per_epoch']:.1f}", f"{r['speedup_vs_1_process']:.2f}x",
                  f"{100 * r['val_accuracy']:.2f}%", f"{100 * r['test_accuracy']:.2f}%", f"{r['wall_seconds']:.0f}"]
                 for r in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())

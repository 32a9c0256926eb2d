"""How often does the gate refuse a model of equal quality? Monte Carlo on the real test set.

An equal-quality candidate is simulated from the baseline's per-image correctness: each image the baseline
gets right is lost with probability q/2, and wrong images are gained so that the expected gain equals the
expected loss, where q is the per-image discordance measured between two runs that differ only by their
seed (two seeds of the same fine-tune). Each simulated candidate goes through the real gate
(``pipeline/gate.py``); the old rate-based rule (refuse when any safety-critical recall drops by more than the
budget in points) is shown beside it.

    python benchmarks/bench_gate.py --a runs/ft_seed0/report.json --b runs/ft_seed1/report.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _common import print_table, save_results

from drivecompress.data.api import Data
from drivecompress.pipeline.gate import check_gate
from drivecompress.pipeline.recipe import Budgets


def old_rule(base_ok: np.ndarray, cand_ok: np.ndarray, y: np.ndarray, safety: list[int], budget: float) -> bool:
    """The first gate: refuse when a safety-critical class's recall drops by more than ``budget`` points."""
    return any(100 * (base_ok[y == c].mean() - cand_ok[y == c].mean()) > budget for c in safety)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", type=Path, required=True, help="report.json of run A (its final predictions)")
    ap.add_argument("--b", type=Path, required=True, help="report.json of run B, same recipe, another seed")
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--budget", type=float, default=1.0, help="max_safety_recall_drop (points)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_gate"))
    a = ap.parse_args()
    data = Data.from_npz()
    y = data.test.y
    pa = np.asarray(json.loads(a.a.read_text())["final"]["predictions"])
    pb = np.asarray(json.loads(a.b.read_text())["final"]["predictions"])
    ok = pa == y
    q = float(((pa == y) != (pb == y)).mean())
    p_lose = q / 2
    p_gain = p_lose * ok.sum() / max(1, (~ok).sum())
    safety = sorted(data.safety_critical)
    budgets = Budgets(max_accuracy_drop=0.5, max_safety_recall_drop=a.budget)
    rng = np.random.default_rng(0)
    base = {"accuracy": float(ok.mean()), "predictions": pa.tolist()}
    refused = {"paired gate": 0, "old rate rule": 0, "systematic loss": 0, "degraded": 0, "pooled bound": 0}
    for _ in range(a.trials):
        flip = np.where(ok, rng.random(len(y)) < p_lose, rng.random(len(y)) < p_gain)
        cand_ok = ok ^ flip
        cand = np.where(cand_ok, y, (y + 1) % data.num_classes)
        g = check_gate(base, {"accuracy": float(cand_ok.mean()), "predictions": cand.tolist()}, budgets, safety,
                       data.class_names, y)
        refused["paired gate"] += not g["passed"]
        refused["old rate rule"] += old_rule(ok, cand_ok, y, safety, a.budget)
        text = " ".join(g["violations"])
        refused["systematic loss"] += "systematic" in text
        refused["degraded"] += "degraded, net loss" in text
        refused["pooled bound"] += "images: " in text
    rows = [{"rule": k, "refused": v, "rate": v / a.trials} for k, v in refused.items()]
    print_table(f"equal-quality candidates refused ({a.trials} trials, per-image discordance q = {q:.4f}, "
                f"budget {a.budget:g} points)", ("rule", "refused", "false-refusal rate"),
                [(r["rule"], str(r["refused"]), f"{100 * r['rate']:.1f}%") for r in rows])
    save_results(a.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

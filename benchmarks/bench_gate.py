"""How often does the gate refuse a model of equal quality? Monte Carlo on the real test set.

An equal-quality candidate is simulated from the baseline's per-image correctness: each image the baseline
gets right is lost with probability q/2, and wrong images are gained so that the expected gain equals the
expected loss, where q is the per-image discordance measured between two runs that differ only by their
seed (two seeds of the same fine-tune). Each simulated candidate goes through the real gate
(``pipeline/gate.py``); the old rate-based rule (refuse when any safety-critical recall drops by more than the
budget in points) is shown beside it.

    python benchmarks/bench_gate.py --a runs/ft_seed0/report.json --b runs/ft_seed1/report.json

``--sweep`` asks the converse question, what agreement with the baseline a compressed model needs: for each
discordance q (percent of test images on which the two disagree in correctness; lost and gained equally
often, so no real loss), the refusal rate of the paired gate. ``--a`` is then the baseline's predictions
(any report.json, or a run's ``baseline_metrics.json``) and ``--b`` is not needed:

    python benchmarks/bench_gate.py --a runs/dc91/baseline_metrics.json --sweep 0.14,0.25,0.5,0.75,1.0

``--power`` (with ``--sweep``) adds the other error rate: how often candidates with a real loss (a few points
of one safety-critical class, or of all images) on top of that noise are refused.

``--like CANDIDATE`` (with ``--sweep``) makes the simulated flips fall as that candidate's do, per bin of the
baseline's true-class probability (``pipeline/gate.py`` ``confidence_propensity``, scaled to each discordance),
instead of uniformly: compressed models mostly lose the images the baseline barely won, which cluster in a few
classes. ``--a`` must then carry the baseline's ``true_class_probability`` (runs measured since 2026-11-27).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _common import predictions, print_table, save_results

from drivecompress.data.api import Data
from drivecompress.pipeline.gate import check_gate, confidence_propensity, equal_quality_candidate
from drivecompress.pipeline.recipe import Budgets


def old_rule(base_ok: np.ndarray, cand_ok: np.ndarray, y: np.ndarray, safety: list[int], budget: float) -> bool:
    """The first gate: refuse when a safety-critical class's recall drops by more than ``budget`` points."""
    return any(100 * (base_ok[y == c].mean() - cand_ok[y == c].mean()) > budget for c in safety)


# Real losses injected on top of the noise for --power: (label, class or None for all images, points).
DEGRADATIONS = [("dangerous curve left (60 images) -5 points", 19, 5.0),
                ("no vehicles (210) -2 points", 15, 2.0),
                ("general caution (390) -1 point", 18, 1.0),
                ("general caution -2 points", 18, 2.0),
                ("all images -0.25 points", None, 0.25),
                ("all images -0.5 points", None, 0.5)]


def degrade(cand_ok: np.ndarray, y: np.ndarray, cls: int | None, points: float,
            rng: np.random.Generator) -> np.ndarray:
    """A real loss on top of the noise: ``points`` of the class's (or all) images, taken from those the
    candidate still gets right."""
    scope = np.ones_like(cand_ok) if cls is None else y == cls
    k = round(points / 100 * int(scope.sum()))
    idx = rng.permutation(np.flatnonzero(scope & cand_ok))[:k]
    out = cand_ok.copy()
    out[idx] = False
    return out


def simulate(pred: np.ndarray, y: np.ndarray, q: float, data: Data, budgets: Budgets, trials: int,
             rng: np.random.Generator, loss: tuple[int | None, float] | None = None,
             propensity: np.ndarray | None = None) -> dict[str, int]:
    """Refusals of ``trials`` candidates of the model predicting ``pred`` at per-image discordance ``q``, by
    rule: of equal quality, or with the real ``loss`` (class or None for all images, points) added. With
    ``propensity`` (per-image flip probabilities, summing to any total) the flips follow it, scaled to ``q``."""
    if propensity is not None:
        propensity = np.clip(propensity * q * len(y) / propensity.sum(), 0.0, 1.0)
    ok = pred == y
    safety = sorted(data.safety_critical)
    base = {"accuracy": float(ok.mean()), "predictions": pred.tolist()}
    refused = {"paired gate": 0, "old rate rule": 0, "per-class rule": 0, "pooled bound": 0}
    for _ in range(trials):
        cand_ok = (equal_quality_candidate(ok, q, rng) if propensity is None
                   else ok ^ (rng.random(len(ok)) < propensity))
        if loss is not None:
            cand_ok = degrade(cand_ok, y, *loss, rng)
        cand = np.where(cand_ok, y, (y + 1) % data.num_classes)
        g = check_gate(base, {"accuracy": float(cand_ok.mean()), "predictions": cand.tolist()}, budgets, safety,
                       data.class_names, y)
        refused["paired gate"] += not g["passed"]
        refused["old rate rule"] += old_rule(ok, cand_ok, y, safety, budgets.max_safety_recall_drop)
        text = " ".join(g["violations"])
        refused["per-class rule"] += any(v.startswith("class ") for v in g["violations"])
        refused["pooled bound"] += "images: " in text
    return refused


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", type=Path, required=True, help="report.json of run A (its final predictions), or with "
                    "--sweep the baseline's predictions (report.json or baseline_metrics.json)")
    ap.add_argument("--b", type=Path, help="report.json of run B, same recipe, another seed (not with --sweep)")
    ap.add_argument("--sweep", help="comma-separated discordances in percent of test images, e.g. 0.25,0.5,1")
    ap.add_argument("--power", action="store_true", help="with --sweep: the refusal rate of candidates with a real "
                    "loss (one class a few points, or all images) on top of the noise: the gate's power")
    ap.add_argument("--like", type=Path, help="with --sweep: a candidate's report.json/done.json whose flips, by "
                    "the baseline's true-class probability, the simulated ones follow (default: uniform flips)")
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--budget", type=float, default=1.0, help="max_safety_recall_drop (points)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_gate"))
    a = ap.parse_args()
    if (a.b is None) == (a.sweep is None):
        ap.error("give either --b (two seeds) or --sweep (discordances)")
    data = Data.from_npz()
    y = data.test.y
    pred = predictions(a.a)
    budgets = Budgets(max_accuracy_drop=0.5, max_safety_recall_drop=a.budget)
    rng = np.random.default_rng(0)
    if a.like is not None and a.sweep is None:
        ap.error("--like needs --sweep")
    if a.sweep is not None:
        prop = None
        if a.like is not None:
            like = predictions(a.like)
            if len(like) != len(y):
                ap.error(f"--like {a.like}: {len(like)} predictions, the test set has {len(y)}")
            prop = confidence_propensity(pred == y, like == y, predictions(a.a, "true_class_probability"))
        try:
            qs = [float(v) / 100 for v in a.sweep.split(",")]
        except ValueError:
            ap.error(f"--sweep {a.sweep!r}: expected comma-separated numbers (percent)")
        rows = []
        for q in qs:
            r = simulate(pred, y, q, data, budgets, a.trials, rng, propensity=prop)
            rows.append({"discordance": q, "images": round(q * len(y)), **{k: v / a.trials for k, v in r.items()}})
        how = f"flips as {a.like}'s by baseline confidence" if a.like else "uniform flips"
        print_table(f"equal-quality candidates refused, by discordance with the baseline ({a.trials} trials each, "
                    f"budget {a.budget:g} points, {how})",
                    ("discordance", "discordant images", "paired gate", "by the per-class rule",
                     "by pooled bound", "old rate rule"),
                    [(f"{100 * r['discordance']:.2f}%", str(r["images"]), f"{100 * r['paired gate']:.1f}%",
                      f"{100 * r['per-class rule']:.1f}%",
                      f"{100 * r['pooled bound']:.1f}%", f"{100 * r['old rate rule']:.1f}%") for r in rows])
        if a.power:
            power = []
            for label, cls, pts in DEGRADATIONS:
                row = {"loss": label}
                for q in qs:
                    row[f"{100 * q:.2f}%"] = simulate(pred, y, q, data, budgets, a.trials, rng,
                                                      (cls, pts), prop)["paired gate"] / a.trials
                power.append(row)
            print_table(f"candidates with a real loss refused (the gate's power; {a.trials} trials each), by "
                        "discordance with the baseline", ("real loss", *(f"{100 * q:.2f}%" for q in qs)),
                        [(r["loss"], *(f"{100 * r[f'{100 * q:.2f}%']:.1f}%" for q in qs)) for r in power])
            rows += power
        save_results(a.out, rows)
        return 0
    q = float(((pred == y) != (predictions(a.b) == y)).mean())
    refused = simulate(pred, y, q, data, budgets, a.trials, rng)
    rows = [{"rule": k, "refused": v, "rate": v / a.trials} for k, v in refused.items()]
    print_table(f"equal-quality candidates refused ({a.trials} trials, per-image discordance q = {q:.4f}, "
                f"budget {a.budget:g} points)", ("rule", "refused", "false-refusal rate"),
                [(r["rule"], str(r["refused"]), f"{100 * r['rate']:.1f}%") for r in rows])
    save_results(a.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

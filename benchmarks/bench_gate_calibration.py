"""The gate's calibration on constructed predictions (issue #52): false refusals of equal-quality candidates
and power against real losses, per rule, under three nulls.

The world is ``evaluate/gate_sim.py``'s: GTSRB's test class counts in 30-frame tracks, a baseline right on
~98% whose errors and unsure answers cluster in hard signs. Equal-quality candidates disagree with it on a
fraction q of the images under three nulls (``uniform``, ``confidence``-shaped, ``tracks``: whole signs flip
together); power cases add a real loss to a 1.5%-discordance candidate, spread over the class's signs or
concentrated in one. Budgets are recipes/default.yaml's (0.5 points pooled, 1 point per class).

    python benchmarks/bench_gate_calibration.py --trials 300 --out runs/bench_gate_calibration
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import print_table, save_results
from rich.progress import track

from drivecompress.data.classes import SAFETY_CRITICAL
from drivecompress.evaluate.gate_sim import NULLS, World, drop_everywhere, equal_quality, gtsrb_like, lose_in_class
from drivecompress.pipeline.gate import paired_rules, pooled_rule
from drivecompress.pipeline.recipe import Budgets

BUDGETS = Budgets(max_accuracy_drop=0.5, max_safety_recall_drop=1.0)
DISCORDANCES = (0.001, 0.005, 0.01, 0.015, 0.02, 0.033)


def verdict(world: World, ok: np.ndarray) -> tuple[bool, bool, bool]:
    """(the per-class rule refuses, a pooled rule refuses, a pooled rule with images independent refuses: the
    policy alternative (b) of docs/gate.md)."""
    pred = world.predictions(ok)
    v = paired_rules(world.base_pred, pred, world.y, BUDGETS, sorted(SAFETY_CRITICAL), (),
                     world.base_prob, world.groups)[1]
    safety = np.isin(world.y, sorted(SAFETY_CRITICAL))
    flat = [pooled_rule("", world.base_pred, pred, world.y, mask, None, budget, BUDGETS.confidence)[1]
            for mask, budget in ((np.ones(len(ok), bool), BUDGETS.max_accuracy_drop),
                                 (safety, BUDGETS.max_safety_recall_drop))]
    return (any(s.startswith("class") for s in v), any(not s.startswith("class") for s in v),
            any(x is not None for x in flat))


def rate(world: World, make: Callable[[np.random.Generator], np.ndarray], trials: int, seed: int) -> np.ndarray:
    """Refusal rates: per-class rule, pooled bounds (signs), whole gate, pooled bounds (images independent)."""
    rng = np.random.default_rng(seed)
    r = np.array([verdict(world, make(rng)) for _ in range(trials)])
    return np.array([r[:, 0].mean(), r[:, 1].mean(), r[:, :2].any(1).mean(), r[:, 2].mean()])


POWER: dict[str, Callable[[World, np.ndarray, np.random.Generator], np.ndarray]] = {
    "7 lost / 0 gained of 60 (dangerous curve left), spread": lambda w, ok, g: lose_in_class(w, ok, 19, 7, g, gained=0),
    "7 lost / 0 gained of 60, one sign": lambda w, ok, g: lose_in_class(w, ok, 19, 7, g, spread=False, gained=0),
    "23 more lost of 450 (speed limit 100), spread": lambda w, ok, g: lose_in_class(w, ok, 7, 23, g),
    "23 more lost of 450, one sign": lambda w, ok, g: lose_in_class(w, ok, 7, 23, g, spread=False),
    "11 more lost of 270 (stop), spread": lambda w, ok, g: lose_in_class(w, ok, 14, 11, g),
    "11 more lost of 270 (stop), one sign": lambda w, ok, g: lose_in_class(w, ok, 14, 11, g, spread=False),
    "pooled 1-point drop, uniform": lambda w, ok, g: drop_everywhere(w, ok, 1.0, g),
    "weakness: pooled 0.4-point drop, uniform": lambda w, ok, g: drop_everywhere(w, ok, 0.4, g),
    "weakness: 3 lost / 0 gained of 60": lambda w, ok, g: lose_in_class(w, ok, 19, 3, g, gained=0),
    "weakness: 7 lost / 0 gained of 60, the baseline's least sure":
        lambda w, ok, g: lose_in_class(w, ok, 19, 7, g, gained=0, unsure_first=True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=300, help="simulated candidates per cell")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_gate_calibration"))
    a = ap.parse_args()
    world = gtsrb_like(a.seed)
    t0 = time.time()
    rows, cells = [], []
    for null in NULLS:
        for q in track(DISCORDANCES, description=f"equal quality, {null}"):
            r = rate(world, lambda g, q=q, null=null: equal_quality(world, q, null, g), a.trials, a.seed + 1)
            rows.append({"kind": "false refusal", "null": null, "discordance": q, "per_class": r[0],
                         "pooled": r[1], "gate": r[2], "pooled_images": r[3]})
            cells.append(["false refusal", null, f"{100 * q:.1f}%", *(f"{100 * x:.1f}%" for x in r)])
    for name, add in track(list(POWER.items()), description="power"):
        for null in NULLS:
            r = rate(world, lambda g, add=add, null=null: add(world, equal_quality(world, 0.015, null, g), g),
                     a.trials, a.seed + 2)
            rows.append({"kind": "power", "case": name, "null": null, "discordance": 0.015, "per_class": r[0],
                         "pooled": r[1], "gate": r[2], "pooled_images": r[3]})
            cells.append([name, null, "1.5%", *(f"{100 * x:.1f}%" for x in r)])
    machine = save_results(a.out, rows)
    print_table(f"Gate calibration: {a.trials} constructed candidates per row, seed {a.seed}, "
                f"{time.time() - t0:.0f} s ({machine.get('cpu', '')})",
                ["case", "background null", "discordance", "per-class rule refuses", "pooled rules refuse",
                 "gate refuses", "pooled, images independent"], cells, width=190)


if __name__ == "__main__":
    main()

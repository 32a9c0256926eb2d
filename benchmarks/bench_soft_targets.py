"""How much do a teacher's soft targets say? Entropy and non-target mass of teachers at several temperatures.

    python benchmarks/bench_soft_targets.py [MODEL ...] [--temperatures 1 2 4] [--images 3000]
                                            [--out runs/bench_soft_targets]

Distillation teaches through the teacher's probabilities on the wrong classes. A teacher trained with label
smoothing (the shipped baseline: 0.1) is pushed towards equal scores on every wrong class, and a temperature
flattens them further; issue #16 asks for a teacher whose soft targets carry information. Per model and
temperature, on a seeded validation subset: the mean entropy (ln 43 = 3.76 nats is uniform), the mean
probability mass off the true class (what the KD term teaches besides the label), and the share of that mass
on the single most likely wrong class (1/42 = 0.024 when it is spread evenly, larger when it has structure).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import print_table, save_results

from drivecompress.data.api import Data
from drivecompress.data.transforms import deploy_input
from drivecompress.evaluate.loading import load_model_arg


def soft_target_stats(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> dict[str, float]:
    """Entropy, non-target mass and runner-up share of softmax(logits / T), averaged over images."""
    p = F.softmax(logits / temperature, dim=1)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(1).mean().item()
    off = p.clone()
    off.scatter_(1, labels[:, None], 0.0)
    mass = off.sum(1)
    return {"entropy_nats": entropy, "non_target_mass": mass.mean().item(),
            "runner_up_share": (off.max(1).values / mass.clamp_min(1e-12)).mean().item()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=["baseline"], help="checkpoint folders (default: baseline)")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    ap.add_argument("--images", type=int, default=3000, help="seeded validation subset")
    ap.add_argument("--data")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_soft_targets"))
    a = ap.parse_args()
    data = Data.from_npz(a.data)
    val = data.val.head(a.images, seed=0)
    x, y = torch.from_numpy(deploy_input(val.x)), torch.as_tensor(val.y).long()
    rows = []
    for name in a.models:
        model = load_model_arg(name).module
        if model is None:
            print(f"bench_soft_targets: {name}: needs a PyTorch checkpoint", file=sys.stderr)
            return 2
        with torch.no_grad():
            logits = torch.cat([model.eval()(x[i:i + 500]) for i in range(0, len(x), 500)]).float()
        acc = (logits.argmax(1) == y).float().mean().item()
        for t in a.temperatures:
            rows.append({"model": name, "val_accuracy": acc, "temperature": t, **soft_target_stats(logits, y, t)})
    print_table(f"soft targets on {len(y):,} validation images (uniform: {torch.log(torch.tensor(43.0)):.2f} nats)",
                ["model", "val acc", "T", "entropy (nats)", "non-target mass", "runner-up share"],
                [[r["model"], f"{100 * r['val_accuracy']:.2f}%", f"{r['temperature']:g}", f"{r['entropy_nats']:.3f}",
                  f"{r['non_target_mass']:.3f}", f"{r['runner_up_share']:.3f}"] for r in rows])
    save_results(a.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Is the architecture search's proxy honest? Its accuracy against full training, on networks trained fully.

    python benchmarks/bench_proxy.py [--teacher baseline] [--candidate NAME=CHECKPOINT ...] [--seeds 2]
                                     [--trained NAME=RECIPE.yaml@ACCURACY ...]
                                     [--proxy-epochs 3] [--proxy-images 6000] [--out runs/bench_proxy]

The search ranks networks by a short distilled training (``search/nas.py``'s ``proxy_train``: a few epochs on
a subset); the networks it keeps are then trained for 30+ epochs. Issue #17 asks how well the first ranks the
second. Full trainings cost about an hour each here, so instead of waiting for a search's finalists this
script takes networks that *were* trained fully (their checkpoints), measures each one's test accuracy, runs
the proxy from scratch on its architecture (``--seeds`` times: the proxy's own noise), and prints both with the
Spearman rank correlation. The default candidates are the fully trained networks on this machine.
``--trained`` adds a network whose checkpoint is gone but whose full training is on record: its architecture
is the recipe's distill step's ``spec`` (with the teacher's input normalization, as the recipe's run gave it),
its test accuracy the one given.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _common import print_table, save_results

from drivecompress.data.api import Data
from drivecompress.distill.student import student_spec
from drivecompress.errors import BadInputError
from drivecompress.evaluate.complexity import count_macs
from drivecompress.evaluate.loading import load_model_arg
from drivecompress.models import build_model, spec_of
from drivecompress.pipeline.recipe import load_recipe
from drivecompress.search.finalize import spearman
from drivecompress.search.nas import SearchConfig, proxy_train
from drivecompress.train.loop import evaluate_accuracy
from drivecompress.utils.device import select_device

DEFAULT_CANDIDATES = {
    "baseline: ResNet 32/64/128 x2, 48 ep cross-entropy": "baseline",
    "recipes/student.yaml: 16 / 48-64-96, 30 ep KD": "runs/student_r1/model",
    "recipes/student-fullres.yaml: + full-res block, 32 ep KD": "runs/student_fr/steps/00-distill/model",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="baseline", help="the proxy's distillation teacher (default: baseline)")
    ap.add_argument("--candidate", action="append", default=[], metavar="NAME=CHECKPOINT",
                    help="a fully trained network (repeatable; default: the three trained on this machine)")
    ap.add_argument("--trained", action="append", default=[], metavar="NAME=RECIPE.yaml@ACCURACY",
                    help="a network trained fully elsewhere: its recipe's distill spec and its test accuracy "
                    "(e.g. 0.9660); repeatable")
    ap.add_argument("--seeds", type=int, default=2, help="proxy runs per candidate (different seeds)")
    ap.add_argument("--proxy-epochs", type=int, default=SearchConfig().proxy_epochs)
    ap.add_argument("--proxy-images", type=int, default=SearchConfig().proxy_images)
    ap.add_argument("--data")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_proxy"))
    a = ap.parse_args()
    pairs = dict(c.split("=", 1) for c in a.candidate if "=" in c) if a.candidate or a.trained else \
        DEFAULT_CANDIDATES
    if a.candidate and len(pairs) != len(a.candidate):
        print("bench_proxy: --candidate takes NAME=CHECKPOINT", file=sys.stderr)
        return 2
    data = Data.from_npz(a.data)
    teacher = load_model_arg(a.teacher).module
    dev = select_device(None)
    networks: list[tuple[str, str, dict, float]] = []  # name, source, spec, full-training test accuracy
    for name, path in pairs.items():
        model = load_model_arg(path).module
        if model is None:
            print(f"bench_proxy: {path}: needs a PyTorch checkpoint (its architecture is retrained)", file=sys.stderr)
            return 2
        networks.append((name, path, spec_of(model), evaluate_accuracy(model, data.test, dev)))
    for item in a.trained:
        name, _, rest = item.partition("=")
        recipe, _, acc = rest.rpartition("@")
        try:
            full = float(acc)
            step = next(c for _, c in load_recipe(recipe).steps if getattr(c, "spec", None))
        except (ValueError, StopIteration, BadInputError) as exc:
            print(f"bench_proxy: --trained {item}: needs NAME=RECIPE.yaml@ACCURACY with a distill step's spec "
                  f"({exc or 'no spec'})", file=sys.stderr)
            return 2
        networks.append((name, recipe, student_spec(step, teacher, data), full))
    rows = []
    for name, path, spec, full in networks:
        model = build_model(spec)
        proxies, seconds = [], []
        for seed in range(a.seeds):
            cfg = SearchConfig(proxy_epochs=a.proxy_epochs, proxy_images=a.proxy_images, seed=seed)
            t0 = time.perf_counter()
            proxies.append(proxy_train(spec, teacher, data, cfg, dev, description=f"{name[:24]} seed {seed}")[1])
            seconds.append(time.perf_counter() - t0)
        rows.append({"candidate": name, "checkpoint": path, "macs": count_macs(model, data.input_shape),
                     "full_test_accuracy": full, "proxy_val_accuracy": proxies,
                     "proxy_mean": statistics.mean(proxies), "proxy_seconds": statistics.mean(seconds)})
    rho = spearman([r["proxy_mean"] for r in rows], [r["full_test_accuracy"] for r in rows])
    print_table(f"proxy ({a.proxy_epochs} epochs of {a.proxy_images:,} images, KD) vs full training; "
                f"Spearman rho = {'n/a' if rho is None else f'{rho:+.2f}'} over {len(rows)}",
                ["candidate", "MMACs", "full training, test", "proxy, per seed", "proxy mean", "proxy s"],
                [[r["candidate"], f"{r['macs'] / 1e6:.1f}", f"{100 * r['full_test_accuracy']:.2f}%",
                  " / ".join(f"{100 * p:.1f}%" for p in r["proxy_val_accuracy"]), f"{100 * r['proxy_mean']:.1f}%",
                  f"{r['proxy_seconds']:.0f}"] for r in rows])
    save_results(a.out, [*rows, {"spearman_proxy_vs_full": rho, "proxy_epochs": a.proxy_epochs,
                                 "proxy_images": a.proxy_images, "seeds": a.seeds}])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Accuracy vs batch-1 int8 latency from a bench_peers results.json, with an accuracy taken from elsewhere for
rows timed as latency only (an architecture built untrained, e.g. a recipe whose checkpoint is gone).

    python scripts/plot_front_vs_recipes.py runs/bench_search_vs_recipes_s39/results.json docs/out.png \
        --accuracy "student architecture=0.9660"

A row whose name contains the given text is plotted at that accuracy with a hollow marker and "(acc. from
its own run)" in its label, so the figure never shows a borrowed number as measured in this run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--accuracy", action="append", default=[], metavar="NAME_PART=ACC",
                    help="accuracy (0-1) of a latency-only row, from the run that trained it")
    a = ap.parse_args()
    rows = [r for r in json.loads(a.results.read_text())["rows"] if "accuracy" in r]
    borrowed = {k: float(v) for k, _, v in (s.partition("=") for s in a.accuracy)}

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        part = next((k for k in borrowed if k in r["model"]), None)
        acc, label = 100 * (borrowed[part] if part else r["accuracy"]), r["model"]
        style = {"facecolors": "none", "edgecolors": "C3"} if part else {"marker": "o" if r["gate_passed"] else "x"}
        if part:
            label = f"{part} (acc. from its own run)"
        ax.scatter(r["latency_ms_p50"], acc, s=45, **style)
        ax.annotate(label, (r["latency_ms_p50"], acc), fontsize=6.5, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("batch-1 latency p50, ms, log scale (ONNX Runtime, 1 thread, one interleaved run)")
    ax.set_ylabel("top-1 accuracy, % (full test set)")
    ax.set_title("Searched front vs recipes (x = refused by the gate, o = passed, hollow = latency only)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Can a network be screened by latency before it is trained? Untrained int8 timings against the trained ones.

    python benchmarks/bench_screen.py [--study runs/search3h] [--budget-ms 0.18] [--out runs/bench_screen]

``search --max-latency-ms`` quantizes and times every sampled network *untrained* and prunes it, untrained, when
it is over the budget by more than ``SCREEN_MARGIN``. That is right only if an int8 graph's latency does not
depend on its weights. This script takes a finished search's trained trials (their ``trials/NNNN/int8.onnx``,
calibrated on the trained weights), screens each trial's network exactly as the search does (and times the
screen itself), then times every trained and untrained graph again side by side in interleaved rounds, and
prints per network: the trained graph's p50, the screen's p50, the untrained graph's p50 in the same rounds,
and whether the screen's decision at ``--budget-ms`` agrees with the trained network's serial timing.
Run it with nothing else running.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _common import print_table, save_results

from drivecompress.data.api import Data
from drivecompress.evaluate.latency import side_by_side
from drivecompress.search.nas import SCREEN_MARGIN, SearchConfig, untrained_latency


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", type=Path, default=Path("runs/search3h"), help="a search's --out folder")
    ap.add_argument("--budget-ms", type=float, default=0.18, help="the screening budget checked (default 0.18: "
                    "10x against this machine's 1.84-1.89 ms fp32 baseline)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--data")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_screen"))
    a = ap.parse_args()
    db = a.study / "study.db"
    if not db.is_file():
        print(f"bench_screen: {db}: no such study (give a search's --out folder)", file=sys.stderr)
        return 2
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{db.resolve()}")
    trials = [t for t in study.get_trials(states=(TrialState.COMPLETE,))
              if (a.study / "trials" / f"{t.number:04d}" / "int8.onnx").is_file()]
    data = Data.from_npz(a.data)
    cfg = SearchConfig()
    a.out.mkdir(parents=True, exist_ok=True)
    screen, paths = {}, {}
    for t in trials:
        key = f"{t.number:04d}"
        t0 = time.perf_counter()
        screen[key] = (untrained_latency(t.user_attrs["spec"], data, cfg, keep=a.out / f"{key}_untrained.onnx"),
                       time.perf_counter() - t0)
        paths[f"{key} trained"] = a.study / "trials" / key / "int8.onnx"
        paths[f"{key} untrained"] = a.out / f"{key}_untrained.onnx"
    again = side_by_side(paths, data.input_shape, runs=cfg.latency_runs, rounds=a.rounds)
    limit = a.budget_ms * (1 + SCREEN_MARGIN)
    rows = []
    for t in trials:
        key = f"{t.number:04d}"
        trained, untrained = again[f"{key} trained"]["latency_ms_p50"], again[f"{key} untrained"]["latency_ms_p50"]
        lat, secs = screen[key]
        rows.append({"trial": t.number, "macs": t.user_attrs.get("macs"), "trial_int8_ms": t.values[1],
                     "trained_ms": trained, "untrained_ms": untrained, "screen_ms": lat, "screen_s": round(secs, 2),
                     "untrained_vs_trained_pct": round(100 * (untrained / trained - 1), 2),
                     "screen_vs_trained_pct": round(100 * (lat / trained - 1), 2),
                     "screened_out": lat > limit, "trained_within_budget": trained <= a.budget_ms})
    rows.sort(key=lambda r: r["trained_ms"])
    cells = [[str(r["trial"]), f"{r['macs'] / 1e6:.1f}", f"{r['trained_ms']:.3f}", f"{r['untrained_ms']:.3f}",
              f"{r['untrained_vs_trained_pct']:+.1f}%", f"{r['screen_ms']:.3f}", f"{r['screen_vs_trained_pct']:+.1f}%",
              f"{r['screen_s']:.1f}", "pruned" if r["screened_out"] else "trained",
              "yes" if r["trained_within_budget"] else "no"] for r in rows]
    print_table(f"Latency screen of {a.study} ({len(rows)} trained networks; budget {a.budget_ms} ms, pruned above "
                f"{limit:.3f} ms)", ["trial", "MMACs", "trained p50 ms", "untrained p50 ms", "diff", "screen p50 ms",
                                     "diff", "screen s", "screen says", f"trained <= {a.budget_ms} ms"], cells)
    lost = [r["trial"] for r in rows if r["screened_out"] and r["trained_within_budget"]]
    diffs = [abs(r["untrained_vs_trained_pct"]) for r in rows]
    sdiffs = [abs(r["screen_vs_trained_pct"]) for r in rows]
    print(f"untrained vs trained, same rounds: median |diff| {statistics.median(diffs):.1f}%, max {max(diffs):.1f}%; "
          f"screen vs trained: median {statistics.median(sdiffs):.1f}%, max {max(sdiffs):.1f}%; screen time median "
          f"{statistics.median(r['screen_s'] for r in rows):.1f} s; networks within the budget the screen would "
          f"have pruned: {lost or 'none'}; pruned: {sum(r['screened_out'] for r in rows)} of {len(rows)}")
    save_results(a.out, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

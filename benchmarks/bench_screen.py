"""Can a network be screened by latency before it is trained? Untrained int8 timings against the trained ones.

    python benchmarks/bench_screen.py --study runs/screen_s48 --budget-ms 0.25 [--repeats 3] [--out DIR]

``search --max-latency-ms`` quantizes and times every sampled network *untrained* and prunes it, untrained, when
it is over the budget by more than ``SCREEN_MARGIN`` in two timings (the second only when the first is over).
That is right only if an int8 graph's latency does not depend on its weights, and only if a screen is steady
enough. The search times every graph against a
fixed reference int8 graph (search/meter.py: per-round ratio x the reference's quiet latency). This script takes a
finished search's trained trials (their ``trials/NNNN/int8.onnx``), screens each trial's network ``--repeats``
times exactly as the search does, then times every trained and untrained graph and the reference again side by
side in ``--rounds`` interleaved rounds. Per network it prints the trained graph's latency (raw p50, and as the
search counts it: ratio to the reference x quiet latency), the untrained graph's in the same rounds, and the
screens' error against the trained figure both ways: the search's reference-based figure and the screen's raw
p50 (what the screen used before the reference), with how often the screen at ``--budget-ms`` pruned a network
whose trained latency is within it: with the first timing alone and with the confirmed screen the search uses.
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
from drivecompress.search.config import SCREEN_MARGIN, SearchConfig
from drivecompress.search.meter import ReferenceMeter, reference_ratio, untrained_latency


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", type=Path, required=True, help="a search's --out folder")
    ap.add_argument("--budget-ms", type=float, required=True, help="the screening budget checked, as the search's "
                    "--max-latency-ms (10x budget: a tenth of the teacher's fp32 latency on this machine)")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds of the side-by-side timing")
    ap.add_argument("--repeats", type=int, default=3, help="screens of every network (their spread is the noise)")
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
    meter = ReferenceMeter(data, cfg.latency_runs, a.out, trials[0].user_attrs["spec"].get("input_norm"))
    limit = a.budget_ms * (1 + SCREEN_MARGIN)
    screens: dict[str, list[tuple[float, float, float, float]]] = {}
    paths = {"reference": meter.path}
    for rep in range(a.repeats):
        for t in trials:
            key = f"{t.number:04d}"
            t0 = time.perf_counter()
            lat = untrained_latency(t.user_attrs["spec"], data, meter, cfg.calibration_images,
                                    keep=a.out / f"{key}_untrained.onnx" if rep == 0 else None, confirm_over=limit)
            screens.setdefault(key, []).append((lat["first_ms"], lat["raw_ms"], time.perf_counter() - t0,
                                                lat["ms"]))
            paths[f"{key} trained"] = a.study / "trials" / key / "int8.onnx"
            paths[f"{key} untrained"] = a.out / f"{key}_untrained.onnx"
    again = side_by_side(paths, data.input_shape, runs=cfg.latency_runs * a.rounds // 5, rounds=a.rounds)
    ref = again["reference"]["round_medians_ms"]
    quiet = min(meter.quiet_ms, *ref)

    rows = []
    for t in trials:
        key = f"{t.number:04d}"
        raw, untrained = again[f"{key} trained"]["latency_ms_p50"], again[f"{key} untrained"]["latency_ms_p50"]
        trained = reference_ratio(again, f"{key} trained") * quiet  # as the search counts it
        est = [e for e, _, _, _ in screens[key]]
        confirmed = [c for _, _, _, c in screens[key]]
        rows.append({"trial": t.number, "macs": t.user_attrs.get("macs"), "trial_int8_ms": t.values[1],
                     "trained_raw_ms": raw, "trained_ms": trained, "untrained_raw_ms": untrained,
                     "untrained_vs_trained_pct": round(100 * (untrained / raw - 1), 2),
                     "screen_ms": est, "screen_raw_ms": [r for _, r, _, _ in screens[key]],
                     "screen_confirmed_ms": confirmed,
                     "screen_s": round(statistics.median(s for _, _, s, _ in screens[key]), 2),
                     "screen_err_pct": [round(100 * (e / trained - 1), 1) for e in est],
                     "screen_raw_err_pct": [round(100 * (r / raw - 1), 1) for _, r, _, _ in screens[key]],
                     "screen_confirmed_err_pct": [round(100 * (c / trained - 1), 1) for c in confirmed],
                     "screened_out_first": sum(e > limit for e in est),
                     "screened_out": sum(c > limit for c in confirmed),
                     "trained_within_budget": trained <= a.budget_ms})
    rows.sort(key=lambda r: r["trained_ms"])

    def span(xs: list[float]) -> str:
        return f"{min(xs):+.0f}..{max(xs):+.0f}%"

    cells = [[str(r["trial"]), f"{r['macs'] / 1e6:.1f}", f"{r['trained_raw_ms']:.3f}", f"{r['trained_ms']:.3f}",
              f"{r['untrained_vs_trained_pct']:+.1f}%", f"{statistics.median(r['screen_ms']):.3f}",
              span(r["screen_err_pct"]), span(r["screen_raw_err_pct"]), span(r["screen_confirmed_err_pct"]),
              f"{r['screen_s']:.1f}", f"{r['screened_out_first']}/{a.repeats}", f"{r['screened_out']}/{a.repeats}",
              "yes" if r["trained_within_budget"] else "no"] for r in rows]
    print_table(f"Latency screen of {a.study} ({len(rows)} trained networks x {a.repeats} screens; budget "
                f"{a.budget_ms} ms, pruned above {limit:.3f} ms; reference quiet {quiet:.3f} ms)",
                ["trial", "MMACs", "trained p50 ms", "trained ms (vs ref)", "untrained diff", "screen ms (vs ref)",
                 "screen err (1st timing)", "raw screen err", "confirmed err", "screen s", "pruned (1st timing)",
                 "pruned (confirmed)", f"trained <= {a.budget_ms} ms"], cells)
    lost_first = [r["trial"] for r in rows if r["screened_out_first"] and r["trained_within_budget"]]
    lost = [r["trial"] for r in rows if r["screened_out"] and r["trained_within_budget"]]
    diffs = [abs(r["untrained_vs_trained_pct"]) for r in rows]
    errs = [abs(e) for r in rows for e in r["screen_err_pct"]]
    raws = [abs(e) for r in rows for e in r["screen_raw_err_pct"]]
    print(f"untrained vs trained, same rounds: median |diff| {statistics.median(diffs):.1f}%, max {max(diffs):.1f}%; "
          f"screen (vs reference) vs trained: median |err| {statistics.median(errs):.1f}%, max {max(errs):.1f}%; "
          f"raw screen p50 vs trained p50: median {statistics.median(raws):.1f}%, max {max(raws):.1f}%; screen "
          f"time median {statistics.median(r['screen_s'] for r in rows):.1f} s; networks within the budget a "
          f"screen pruned: first timing alone {lost_first or 'none'}, confirmed (as the search does) {lost or 'none'}")
    save_results(a.out, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

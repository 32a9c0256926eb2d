"""Peers side by side on the shipped baseline, in one run: what a user gets from ONNX Runtime's quantizer and
NNCF with their defaults, and from drivecompress, on the same calibration images, test set, gate and timer.

    pip install -e '.[peers]'          # nncf (ONNX Runtime's quantizer comes with onnxruntime)
    python benchmarks/bench_peers.py   # --calib 300 --accuracy-control to also run NNCF's accuracy-control mode
    python benchmarks/bench_peers.py --torch-pruning --also "drivecompress default recipe=runs/demo-..."

``--torch-pruning`` prunes the baseline twice at the same MACs with the same fine-tuning budget: plain
Torch-Pruning (``MetaPruner``, L2 magnitude, uniform ratio, no channel rounding, cross-entropy fine-tuning: what
its README shows) and drivecompress's structured step (channels rounded to 16, distillation from the baseline);
both float models and drivecompress's int8 of its own are measured. ``--also NAME=RUN`` adds the final model of a
drivecompress run folder (e.g. the demo's) to the same table, ``--also NAME=FILE.onnx`` any ONNX model (its MACs
read from the graph).

Per model: accuracy, the worst safety-critical class's recall, the paired gate's verdict (the budgets of
recipes/default.yaml), size, MACs, batch-1 p50 (one thread; all models measured in interleaved rounds, so the
ratios hold on a noisy machine) and batch-64 throughput (all threads), on ONNX Runtime. Writes
runs/bench_peers/results.json and peers.png (accuracy vs latency).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from _common import print_table, save_results

import drivecompress as dc
from drivecompress.data.gtsrb import repo_root
from drivecompress.data.transforms import deploy_input
from drivecompress.evaluate.complexity import count_macs, onnx_macs
from drivecompress.evaluate.latency import SpeedConfig, measure_speed, side_by_side
from drivecompress.evaluate.measure import evaluate_predictor
from drivecompress.evaluate.predictor import OnnxPredictor
from drivecompress.pipeline.gate import check_gate


def ort_static(fp32: Path, out: Path, calib: np.ndarray, per_channel: bool) -> Path:
    """ONNX Runtime's quantize_static with its defaults (QDQ, int8 activations and weights, MinMax)."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"image": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp32), str(out), Reader(), per_channel=per_channel)
    return out


def nncf_ptq(fp32: Path, out: Path, calib: np.ndarray) -> Path:
    """NNCF's post-training quantization of the ONNX model with its defaults."""
    import nncf

    ds = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))], lambda x: {"image": x})
    onnx.save(nncf.quantize(onnx.load(str(fp32)), ds, subset_size=len(calib)), str(out))
    return out


def nncf_accuracy_control(fp32: Path, out: Path, calib: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> Path:
    """NNCF's quantization with accuracy control (max drop 0.5 points on a validation subset)."""
    import nncf

    ds = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))], lambda x: {"image": x})
    val = nncf.Dataset([(val_x[i : i + 64], val_y[i : i + 64]) for i in range(0, len(val_x), 64)],
                       lambda item: {"image": item[0]})

    def validate(model, items) -> float:
        import onnxruntime as ort

        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        correct = n = 0
        for x, y in items:
            correct += int((sess.run(None, {"image": x})[0].argmax(1) == y).sum())
            n += len(y)
        return correct / n

    model = nncf.quantize_with_accuracy_control(onnx.load(str(fp32)), ds, val, validation_fn=validate, max_drop=0.005,
                                                subset_size=len(calib))
    onnx.save(model, str(out))
    return out


def torch_pruning_peer(model, data, target_macs: int, epochs: int, subset: int | None):
    """Plain Torch-Pruning as its README shows it: MetaPruner with L2 magnitude importance, one uniform ratio
    (found by bisection to land on ``target_macs``), the classifier kept, no channel rounding; then the same
    fine-tuning budget as drivecompress's step, with cross-entropy only (no teacher)."""
    import torch_pruning as tp

    from drivecompress.prune.structured import output_layers

    example = data.example_input()

    def pruned(ratio: float):
        m = copy.deepcopy(model).eval()
        mods = dict(m.named_modules())
        ignored = [mods[n] for n in output_layers(m, example)]
        tp.pruner.MetaPruner(m, example, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
                             ignored_layers=ignored).step()
        return m

    lo, hi = 0.0, 0.95
    for _ in range(14):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count_macs(pruned(mid), data.input_shape) > target_macs else (lo, mid)
    m = pruned(hi)
    dc.finetune(m, data, dc.FinetuneConfig(epochs=epochs, train_subset=subset, distill=False), epochs)
    return m, hi


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib", type=int, default=300, help="calibration images for every quantizer (default 300)")
    ap.add_argument("--test-subset", type=int, help="seeded test subset (default: the whole test set)")
    ap.add_argument("--runs", type=int, default=500, help="timed batch-1 runs per model (interleaved)")
    ap.add_argument("--accuracy-control", action="store_true", help="also NNCF's accuracy-control mode (slow)")
    ap.add_argument("--torch-pruning", action="store_true",
                    help="also plain Torch-Pruning vs drivecompress's structured step, same MACs and fine-tuning")
    ap.add_argument("--prune-ratio", type=float, default=0.25, help="drivecompress's channel ratio (default 0.25)")
    ap.add_argument("--finetune-epochs", type=int, default=2, help="fine-tuning budget of both pruners")
    ap.add_argument("--finetune-subset", type=int, default=12000, help="training images per fine-tuning epoch")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=RUN",
                    help="add the final model of a drivecompress run folder, or an ONNX file (repeatable)")
    ap.add_argument("--only-also", action="store_true",
                    help="skip the peers: the fp32 baseline and the --also run folders only, side by side (e.g. the "
                         "search's finalists against the existing recipes' models)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_peers"))
    a = ap.parse_args()
    for spec in a.also:
        name, _, run = spec.partition("=")
        if not name or not ((Path(run) / "report.json").is_file() or (run.endswith(".onnx") and Path(run).is_file())):
            ap.error(f"--also {spec!r}: expected NAME=RUN_FOLDER with a report.json in RUN_FOLDER, or NAME=FILE.onnx")
    a.out.mkdir(parents=True, exist_ok=True)
    data = dc.Data.from_npz()
    model = dc.load_model(repo_root() / "baseline")
    test = data.test.head(a.test_subset, seed=0)
    calib = deploy_input(data.train.head(a.calib, seed=0).x)
    fp32 = dc.export_onnx(model, a.out / "fp32.onnx", deploy_input(data.val.x[:64])).path
    default_recipe = dc.load_recipe(repo_root() / "recipes" / "default.yaml")
    # The row is labelled with the default recipe, so it runs that recipe's PTQ settings (e.g. exclude_ops),
    # with only the calibration count set to the peers' shared figure.
    ours_ptq = next(c for t, c in default_recipe.steps if t == "ptq").model_copy(
        update={"calibration_images": a.calib})
    makers = {
        "ORT quantize_static (defaults)": lambda p: ort_static(fp32, p, calib, per_channel=False),
        "ORT quantize_static (per-channel)": lambda p: ort_static(fp32, p, calib, per_channel=True),
        "NNCF quantize (defaults)": lambda p: nncf_ptq(fp32, p, calib),
        "drivecompress ptq (recipes/default.yaml)": lambda p: (
            dc.quantize(fp32, data, p, ours_ptq), p)[1],
    }
    if a.only_also:
        if not a.also or a.accuracy_control or a.torch_pruning:
            ap.error("--only-also needs --also and excludes --accuracy-control and --torch-pruning")
        makers.clear()
    if a.accuracy_control:
        v = data.val.head(2000, seed=0)
        makers["NNCF accuracy control (0.5 pt)"] = lambda p: nncf_accuracy_control(fp32, p, calib,
                                                                                  deploy_input(v.x), v.y)
    base_macs = count_macs(model, data.input_shape)
    macs: dict[str, int] = {}
    if a.torch_pruning:
        ours = copy.deepcopy(model)
        t_ours = time.perf_counter()
        dc.prune(ours, data, dc.PruneConfig(ratio=a.prune_ratio, iterations=1, finetune_epochs=0,
                                            recovery_epochs=a.finetune_epochs, train_subset=a.finetune_subset),
                 teacher=model)
        t_ours = time.perf_counter() - t_ours
        ours_macs = count_macs(ours, data.input_shape)
        t_tp = time.perf_counter()
        peer, ratio = torch_pruning_peer(model, data, ours_macs, a.finetune_epochs, a.finetune_subset)
        t_tp = time.perf_counter() - t_tp
        tp_name = f"Torch-Pruning MetaPruner (ratio {ratio:.3f}, CE fine-tune), fp32"
        ours_name = f"drivecompress prune (ratio {a.prune_ratio}, round 16, KD), fp32"
        ours_fp32 = dc.export_onnx(ours, a.out / "ours_pruned.onnx", deploy_input(data.val.x[:64])).path
        makers[tp_name] = lambda p: dc.export_onnx(peer, p, deploy_input(data.val.x[:64])).path
        makers[ours_name] = lambda p: ours_fp32
        makers["drivecompress prune + ptq, int8"] = lambda p: (
            dc.quantize(ours_fp32, data, p, ours_ptq), p)[1]
        macs.update({tp_name: count_macs(peer, data.input_shape), ours_name: ours_macs,
                     "drivecompress prune + ptq, int8": ours_macs})
        train_seconds = {tp_name: t_tp, ours_name: t_ours, "drivecompress prune + ptq, int8": t_ours}
    else:
        train_seconds = {}
    for spec in a.also:
        name, _, run = spec.partition("=")
        if run.endswith(".onnx"):
            makers[name] = lambda p, run=run: Path(run)
            macs[name] = onnx_macs(run)
            continue
        rep = json.loads((Path(run) / "report.json").read_text())
        makers[name] = lambda p, run=run, rep=rep: Path(run) / rep["artifact"]
        macs[name] = rep["final"]["macs"] or onnx_macs(Path(run) / rep["artifact"])
    paths, seconds, failed = {"fp32 baseline": fp32}, {"fp32 baseline": 0.0}, {}
    for i, (name, make) in enumerate(makers.items()):
        t0 = time.perf_counter()
        try:
            paths[name] = make(a.out / f"peer{i}.onnx")
            seconds[name] = time.perf_counter() - t0 + train_seconds.get(name, 0.0)
        except Exception as exc:  # a peer that does not run here is reported, not hidden
            failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    budgets = default_recipe.budgets
    safety = sorted(data.safety_critical)
    metrics = {k: evaluate_predictor(OnnxPredictor(p), test, safety_critical=data.safety_critical,
                                     num_classes=data.num_classes) for k, p in paths.items()}
    lat = side_by_side(paths, data.input_shape, runs=a.runs)
    rows = []
    for k, p in paths.items():
        m = metrics[k]
        gate = check_gate(metrics["fp32 baseline"], m, budgets, safety, data.class_names, test.y)
        worst = min(safety, key=lambda c: m["per_class_recall"][c])
        thr = measure_speed(p, SpeedConfig(runs=1, warmup=5, throughput_seconds=3.0), data.input_shape)
        rows.append({"model": k, "accuracy": m["accuracy"], "worst_safety_class": worst,
                     "worst_safety_recall": m["per_class_recall"][worst], "gate_passed": gate["passed"],
                     "gate_violations": len(gate["violations"]), "size_bytes": p.stat().st_size,
                     "macs": macs.get(k, base_macs),
                     "latency_ms_p50": lat[k]["latency_ms_p50"], "throughput_ips": thr["throughput_ips"],
                     "seconds": round(seconds[k], 1)})
    base = rows[0]
    for r in rows:
        r["speedup"] = base["latency_ms_p50"] / r["latency_ms_p50"]
        r["smaller"] = base["size_bytes"] / r["size_bytes"]
    save_results(a.out, rows + [{"model": k, "failed": v} for k, v in failed.items()])
    _plot(rows, a.out / "peers.png")
    print_table(f"Peers on the shipped baseline ({len(test):,} test images, {a.calib} calibration images)",
                ["model", "accuracy", "worst safety class", "gate", "size", "MMACs", "p50 ms", "speed-up",
                 "img/s b64", "time s"],
                [[r["model"], f"{100 * r['accuracy']:.2f}%",
                  f"{r['worst_safety_class']}: {100 * r['worst_safety_recall']:.1f}%",
                  "pass" if r["gate_passed"] else f"refused ({r['gate_violations']})", f"{r['size_bytes']:,}",
                  f"{r['macs'] / 1e6:.1f}" if r["macs"] else "-",
                  f"{r['latency_ms_p50']:.3f}", f"{r['speedup']:.2f}x", f"{r['throughput_ips']:.0f}",
                  f"{r['seconds']:.0f}"] for r in rows], width=170)
    for k, v in failed.items():
        print(f"{k}: did not run here ({v})")
    return 0


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ax.scatter(r["latency_ms_p50"], 100 * r["accuracy"], s=40, marker="o" if r["gate_passed"] else "x")
        ax.annotate(r["model"], (r["latency_ms_p50"], 100 * r["accuracy"]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    ax.set_xlabel("batch-1 latency p50, ms (ONNX Runtime, 1 thread; lower is better)")
    ax.set_ylabel("top-1 accuracy, % (full test set)")
    ax.set_title("Peers on the shipped baseline (x = refused by the gate)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())

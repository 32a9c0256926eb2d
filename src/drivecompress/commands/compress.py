"""``drivecompress compress MODEL --recipe FILE --out DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from drivecompress.commands.base import command


@command("compress", "Run a recipe (YAML list of steps: finetune, ptq, qat, ...) on MODEL. Measures the input "
         "model and every step on ONNX Runtime, checks the recipe's budgets (safety gate: exit 3 and the model "
         "kept as model.rejected.onnx when violated), and writes OUT/model.onnx, OUT/baseline.onnx, "
         "OUT/report.json and OUT/report.html. --resume continues a killed run from its last completed step.")
def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="checkpoint folder, .onnx file (graph-only steps such as ptq), "
                   "'baseline' or 'searched'")
    p.add_argument("--recipe", type=Path, required=True, help="recipe YAML (see recipes/)")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last completed step")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a recipe value, type-checked, e.g. --set steps.0.calibration=entropy "
                   "or --set budgets.max_accuracy_drop=0.3 (repeatable)")
    p.add_argument("--nproc-per-node", type=int, default=1, metavar="N",
                   help="run the recipe's training (fine-tuning, distillation, QAT) data-parallel in N local "
                        "processes (torchrun); rank 0 alone writes the run folder and measures")


@_args.bind
def _run(a: argparse.Namespace) -> dict[str, Any]:
    from drivecompress.api import as_data, as_model, as_recipe

    recipe = as_recipe(a.recipe, a.overrides)
    data = as_data(a.data)
    return run_with_summary(as_model(a.model), recipe, data, a.out, a.resume, a.device)


def run_with_summary(loaded, recipe, data, out: Path, resume: bool, device: str | None) -> dict[str, Any]:
    """Run and summarise; on a gate refusal the summary still reaches stdout (attached to the exception)."""
    from drivecompress.errors import GateRefusedError
    from drivecompress.pipeline.runner import run_recipe
    from drivecompress.train import distributed as ddp

    try:
        rep = run_recipe(loaded, recipe, data, out, resume=resume, device=device)
        if not ddp.is_main():
            return {}  # ranks > 0 trained; rank 0 reports
    except GateRefusedError as exc:
        if exc.report:
            exc.summary = summary(exc.report, out)  # type: ignore[attr-defined]
        raise
    return summary(rep, out)


def summary(rep: dict[str, Any], out: Path) -> dict[str, Any]:
    """The few numbers a person wants on the terminal; everything else is in report.json/html."""
    from drivecompress.pipeline.gate import noise_sentence

    b, f = rep["baseline"], rep["final"]
    sbs = rep.get("side_by_side_latency", {})

    def lat(m: dict[str, Any], key: str) -> float:
        return sbs.get(key, m)["latency_ms_p50"]

    return {
        "report": str(out / "report.html"),
        "artifact": str(out / rep["artifact"]),
        "gate_passed": rep["gate"]["passed"],
        "gate_violations": rep["gate"]["violations"],
        **({"gate_noise": noise_sentence(rep["gate"]["noise"])} if "noise" in rep["gate"] else {}),
        "accuracy": f"{100 * b['accuracy']:.2f}% -> {100 * f['accuracy']:.2f}%",
        "latency_ms_p50": f"{lat(b, 'baseline'):.3f} -> {lat(f, 'final'):.3f} (measured side by side)",
        "size_bytes": f"{b['size_bytes']:,} -> {f['size_bytes']:,}",
        **{k: round(v, 3) for k, v in rep["ratios"].items()},
        **({"targets": [f"{t['target']}: {t['achieved']}" + ("" if t["met"] else f" - MISSED, {t['shortfall']}")
                        for t in rep["targets"]]} if rep.get("targets") else {}),
        "timing_quiet": rep.get("side_by_side_stability", {}).get("quiet"),
    }

"""``drivecompress compress MODEL --recipe FILE --out DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from drivecompress.cli import command


@command("compress", "Run a recipe (YAML list of steps: finetune, ptq, qat, ...) on MODEL. Measures the input "
         "model and every step on ONNX Runtime, checks the recipe's budgets (safety gate: exit 3 and the model "
         "kept as model.rejected.onnx when violated), and writes OUT/model.onnx, OUT/baseline.onnx, "
         "OUT/report.json and OUT/report.html. --resume continues a killed run from its last completed step.")
def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="checkpoint folder or 'baseline'")
    p.add_argument("--recipe", type=Path, required=True, help="recipe YAML (see recipes/)")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last completed step")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a recipe value, type-checked, e.g. --set steps.0.calibration=entropy "
                   "or --set budgets.max_accuracy_drop=0.3 (repeatable)")


@_args.bind
def _run(a: argparse.Namespace) -> dict[str, Any]:
    from drivecompress.pipeline.recipe import load_recipe
    from drivecompress.pipeline.runner import run_recipe

    recipe = load_recipe(a.recipe, a.overrides)
    rep = run_recipe(a.model, recipe, a.out, resume=a.resume, data=a.data, device=a.device)
    return summary(rep, a.out)


def summary(rep: dict[str, Any], out: Path) -> dict[str, Any]:
    """The few numbers a person wants on the terminal; everything else is in report.json/html."""
    b, f = rep["baseline"], rep["final"]
    return {
        "report": str(out / "report.html"),
        "artifact": str(out / rep["artifact"]),
        "gate_passed": rep["gate"]["passed"],
        "accuracy": f"{100 * b['accuracy']:.2f}% -> {100 * f['accuracy']:.2f}%",
        "latency_ms_p50": f"{b['latency_ms_p50']:.3f} -> {f['latency_ms_p50']:.3f}",
        "size_bytes": f"{b['size_bytes']:,} -> {f['size_bytes']:,}",
        **{k: round(v, 3) for k, v in rep["ratios"].items()},
    }

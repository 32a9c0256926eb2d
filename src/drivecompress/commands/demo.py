"""``drivecompress demo``: the main job on the shipped baseline — run ``recipes/default.yaml`` and say where
the report is."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from drivecompress.commands.base import command


@command("demo", "Run the main job: compress the shipped baseline with recipes/default.yaml (int8 on ONNX "
         "Runtime, gated on accuracy and safety-critical recall), measure baseline and result side by side, "
         "and write a run folder with model.onnx, report.json and report.html.")
def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="baseline", help="model to compress (default: the shipped baseline)")
    p.add_argument("--recipe", type=Path, help="recipe (default: recipes/default.yaml)")
    p.add_argument("--out", type=Path, help="run folder (default: runs/demo-<timestamp>, never overwritten)")


@_args.bind
def _run(a: argparse.Namespace) -> dict[str, Any]:
    from rich.console import Console

    from drivecompress.api import as_data, as_model, as_recipe
    from drivecompress.commands.compress import run_with_summary
    from drivecompress.data.gtsrb import repo_root
    from drivecompress.errors import GateRefusedError

    recipe_path = a.recipe or repo_root() / "recipes" / "default.yaml"
    out = a.out or repo_root() / "runs" / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    recipe = as_recipe(recipe_path)
    data = as_data(a.data)
    loaded = as_model(a.model)
    err = Console(stderr=True)
    t0 = time.perf_counter()
    try:
        result = run_with_summary(loaded, recipe, data, out, False, a.device)
    except GateRefusedError as exc:
        _print_figures(err, getattr(exc, "summary", {}))
        err.print(f"[bold red]demo[/]: the gate refused the result; see {out / 'report.html'}")
        raise
    _print_figures(err, result)
    err.print(f"[bold]demo[/]: PASSED in {time.perf_counter() - t0:.0f} s. Open the report: {out / 'report.html'}")
    print(f"report: {out / 'report.html'}", file=sys.stderr)
    return result


def _print_figures(err, s: dict[str, Any]) -> None:
    """The summary figures, before the verdict, so a refused demo still shows what it reached."""
    for k in ("accuracy", "latency_ms_p50", "latency_ms_p50_ratio", "size_bytes", "size_bytes_ratio",
              "throughput_ratio"):
        if k in s:
            err.print(f"  {k}: {s[k]}")

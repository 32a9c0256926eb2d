"""``drivecompress demo``: the main job on the shipped baseline — run ``recipes/default.yaml`` and say where
the report is."""

from __future__ import annotations

import argparse
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
    from drivecompress.data.gtsrb import repo_root, shipped
    from drivecompress.errors import GateRefusedError

    recipe_path = a.recipe or shipped("recipes") / "default.yaml"
    runs = repo_root() / "runs" if (repo_root() / "pyproject.toml").exists() else Path.cwd() / "runs"
    out = a.out or runs / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    recipe = as_recipe(recipe_path)
    data = as_data(a.data)
    loaded = as_model(a.model)
    err = Console(stderr=True)
    t0 = time.perf_counter()
    try:  # the figures are printed once, by the CLI's table (stdout), refused or passed
        result = run_with_summary(loaded, recipe, data, out, False, a.device)
    except GateRefusedError:
        err.print(f"[bold red]demo[/]: the gate refused the result; see {out / 'report.html'}")
        raise
    err.print(f"[bold]demo[/]: PASSED in {time.perf_counter() - t0:.0f} s")
    return result

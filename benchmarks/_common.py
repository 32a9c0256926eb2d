"""What every benchmark script does last: print its rows as one right-aligned rich table and save them with
the machine they were measured on (numbers without the CPU that produced them are not comparable); and the
reading of a run's saved per-image predictions, which the gate benchmarks share."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from drivecompress.evaluate.machine import machine_info


def print_table(title: str, columns: Sequence[str], cells: Sequence[Sequence[str]], width: int = 140) -> None:
    """One table on stdout, every column right-aligned (figures line up for comparison)."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right")
    for row in cells:
        table.add_row(*row)
    Console(width=width).print(table)


def save_results(out: Path, rows: list[dict[str, Any]], machine: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``out/results.json`` ({rows, machine}); returns the machine record it used."""
    machine = machine or machine_info()
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"rows": rows, "machine": machine}, indent=2))
    return machine


def predictions(path: Path, key: str = "predictions") -> np.ndarray:
    """Per-image predictions (or another per-image list, e.g. ``true_class_probability``) saved by a run: its
    final model's (report.json), a step's (done.json) or a measured model's (``*_metrics.json``)."""
    d = json.loads(path.read_text())
    m = d.get("final", d.get("metrics", d))
    if key not in m:
        raise SystemExit(f"{path}: no '{key}' (measured before it was recorded? re-measure the model)")
    return np.asarray(m[key])

"""The search's last phase: its best candidates trained fully, quantized and gated exactly like ``compress``.

A short proxy only ranks networks; what a user deploys is a network trained for real. Each finalist gets a
recipe (``distill`` with its spec, then ``qat``) written to ``DIR/finalists/NNNN/recipe.yaml`` and run by the
same runner as ``drivecompress compress`` into ``DIR/finalists/NNNN/run``: measured on ONNX Runtime side by
side with the teacher, gated with the paired per-image gate. The proxy is then judged on the finalists: the
Spearman rank correlation between proxy accuracy and full-training accuracy. Finalists already run (their
``report.json`` exists) are read back, so a killed finalize phase resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import yaml

from drivecompress.data.api import Data
from drivecompress.distill.step import OnnxTeacher
from drivecompress.errors import GateRefusedError
from drivecompress.search.config import SearchConfig
from drivecompress.utils.io import atomic_write_text


def candidate_recipe(row: dict[str, Any], cfg: SearchConfig) -> dict[str, Any]:
    """The recipe that trains one Pareto candidate fully: Hinton distillation from the teacher with weight
    averaging (how the shipped student was made), then QAT with the float student as teacher."""
    spec = {k: v for k, v in row["spec"].items() if k not in ("num_classes", "input_norm")}  # from data/teacher
    subset = {"train_subset": cfg.final_train_subset} if cfg.final_train_subset else {}
    # a stronger teacher for the long training (--final-teacher); the gate still compares with the search's
    taught = {"teacher": cfg.final_teacher[0] if len(cfg.final_teacher) == 1 else list(cfg.final_teacher)
              } if cfg.final_teacher else {}
    doc: dict[str, Any] = {
        "name": f"searched-{row['trial']:04d}",
        "description": (f"Trial {row['trial']} of drivecompress search (proxy accuracy "
                        f"{100 * row['proxy_accuracy']:.2f}%, int8 {row['int8_latency_ms']:.3f} ms in the trial): "
                        f"{cfg.final_epochs} epochs of distillation from "
                        f"{' + '.join(cfg.final_teacher) or 'the teacher'}, the last "
                        f"{cfg.final_swa_epochs} averaged, then {cfg.final_qat_epochs} of QAT."),
        **taught,
        "budgets": {"max_accuracy_drop": cfg.max_accuracy_drop, "max_safety_recall_drop": cfg.max_safety_recall_drop},
        "targets": {"min_latency_speedup": cfg.target_speedup, "max_accuracy_drop": cfg.max_accuracy_drop},
        "steps": [
            {"type": "distill", "spec": spec, "epochs": cfg.final_epochs, "swa_epochs": cfg.final_swa_epochs,
             "swa_lr": 0.03, "lr": 0.1, "temperature": 4.0, "alpha": 0.9, **subset},
            {"type": "qat", "epochs": cfg.final_qat_epochs, "lr": 0.002, "distill": True, "temperature": 2.0,
             "alpha": 0.5, "safety_weight": 2.0, **subset},
        ],
    }
    if cfg.final_test_subset:
        doc["evaluation"] = {"test_subset": cfg.final_test_subset}
    return doc


def pick_finalists(front: list[dict[str, Any]], count: int, min_speedup: float | None,
                   max_latency_ms: float | None = None) -> list[dict[str, Any]]:
    """The ``count`` front members with the best proxy accuracy among those at least ``min_speedup`` faster
    than the teacher's fp32 and at most ``max_latency_ms`` int8 batch-1 (both as re-measured serially; members
    without a serial figure count as not fast enough when a limit is given). The millisecond limit is the car's
    own budget and does not move with the teacher's timing, which the speed-up does (2.7% between two runs)."""
    def fast(r: dict[str, Any]) -> bool:
        if min_speedup is not None and (r.get("speedup_vs_teacher_fp32") or 0) < min_speedup:
            return False
        ms = r.get("int8_latency_ms_serial")
        return max_latency_ms is None or (ms is not None and ms <= max_latency_ms)

    return sorted(filter(fast, front), key=lambda r: -r["proxy_accuracy"])[:count]


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation (ties get their average rank); None below three pairs or with no spread."""
    if len(a) < 3:
        return None

    def ranks(v: list[float]) -> np.ndarray:
        x = np.asarray(v, dtype=float)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=float)
        for value in np.unique(x):  # average rank over ties
            r[x == value] = r[x == value].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def finalize(teacher: nn.Module, data: Data, out: Path, front: list[dict[str, Any]], cfg: SearchConfig,
             device: torch.device, recorded: dict[int, float] | None = None,
             proxy: dict[int, float] | None = None) -> dict[str, Any]:
    """Train, quantize, measure and gate the finalists; returns their rows, the proxy's rank correlation and
    the chosen model (the fastest finalist the gate passed). ``recorded``: seconds per trial from an earlier
    finalize phase, kept for the finalists it finished (read back here in a second). ``proxy``: every finished
    trial's proxy accuracy, so that finalists an earlier call trained and this one did not pick (the front
    moved after more trials, or fewer were asked for) stay in the table, the correlation and the choice."""
    from drivecompress.api import as_model
    from drivecompress.pipeline.recipe import parse_recipe
    from drivecompress.pipeline.runner import run_recipe

    rows, before = [], recorded or {}
    picked = pick_finalists(front, cfg.finalists, cfg.min_speedup, cfg.max_latency_ms)
    for cand in picked:
        folder = out / "finalists" / f"{cand['trial']:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        recipe_path, run_dir = folder / "recipe.yaml", folder / "run"
        t0, kept = time.perf_counter(), None
        if (run_dir / "report.json").exists():  # run before: its recipe stays the one it ran, its time is kept
            rep = json.loads((run_dir / "report.json").read_text())
            kept = _seconds(rep, before.get(cand["trial"]))
        else:
            doc = candidate_recipe(cand, cfg)
            atomic_write_text(recipe_path, yaml.safe_dump(doc, sort_keys=False))
            try:
                model = as_model(teacher.path if isinstance(teacher, OnnxTeacher) else teacher)
                rep = run_recipe(model, parse_recipe(doc, str(recipe_path)), data, run_dir,
                                 resume=run_dir.exists(), device=device)
            except GateRefusedError as exc:
                rep = exc.report
        rows.append(_row(cand, rep, recipe_path, run_dir, kept or time.perf_counter() - t0))
    done = {c["trial"] for c in picked}
    for folder in sorted((out / "finalists").glob("[0-9][0-9][0-9][0-9]")):
        trial, report = int(folder.name), folder / "run" / "report.json"
        if trial not in done and trial in (proxy or {}) and report.exists():
            rep = json.loads(report.read_text())
            rows.append(_row({"trial": trial, "proxy_accuracy": proxy[trial]}, rep, folder / "recipe.yaml",
                             folder / "run", _seconds(rep, before.get(trial))))
    rho = spearman([r["proxy_accuracy"] for r in rows], [r["accuracy"] for r in rows])
    passed = [r for r in rows if r["gate_passed"]]
    chosen = max(passed, key=lambda r: r["speedup"] or 0) if passed else None
    if chosen is not None:  # the recipe that reproduces the chosen model, at the search folder's top
        atomic_write_text(out / "recipe.yaml", Path(chosen["recipe"]).read_text())
    return {"finalists": rows, "spearman_proxy_vs_full": rho, "chosen": chosen["trial"] if chosen else None}


def _seconds(rep: dict[str, Any], recorded: float | None) -> float:
    """A finished finalist's time: what the finalize phase that trained it recorded, else its steps' times."""
    return recorded or sum(s.get("seconds") or 0 for s in rep.get("steps", []))


def _row(cand: dict[str, Any], rep: dict[str, Any], recipe: Path, run_dir: Path, seconds: float) -> dict[str, Any]:
    ratios, final, gate = rep.get("ratios", {}), rep.get("final", {}), rep.get("gate", {})
    steps = {s.get("type"): s.get("seconds") for s in rep.get("steps", [])}
    return {"trial": cand["trial"], "proxy_accuracy": cand["proxy_accuracy"], "accuracy": final.get("accuracy"),
            "accuracy_delta_points": ratios.get("accuracy_delta_points"),
            "speedup": ratios.get("latency_ms_p50_ratio"), "size_reduction": ratios.get("size_bytes_ratio"),
            "gate_passed": bool(gate.get("passed")), "violations": gate.get("violations", []),
            "train_seconds": {k: v for k, v in steps.items() if k in ("distill", "qat")},
            "seconds": round(seconds, 1), "recipe": str(recipe), "run": str(run_dir)}

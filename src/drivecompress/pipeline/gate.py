"""The safety gate: check the final model against the recipe's budgets, with the figures in each verdict."""

from __future__ import annotations

from typing import Any

from drivecompress.data.classes import CLASS_NAMES, SAFETY_CRITICAL
from drivecompress.pipeline.recipe import Budgets, Targets


def check_gate(baseline: dict[str, Any], final: dict[str, Any], budgets: Budgets) -> dict[str, Any]:
    """``{"passed": bool, "violations": [str]}``; a budget whose metric was not measured is a violation
    (the gate never passes a model on numbers it did not measure)."""
    v: list[str] = []
    if budgets.max_accuracy_drop is not None:
        drop = 100.0 * (baseline["accuracy"] - final["accuracy"])
        if drop > budgets.max_accuracy_drop:
            v.append(f"accuracy dropped {drop:.2f} points ({100 * baseline['accuracy']:.2f}% -> "
                     f"{100 * final['accuracy']:.2f}%), budget {budgets.max_accuracy_drop:.2f}")
    if budgets.max_safety_recall_drop is not None:
        for c in sorted(SAFETY_CRITICAL):
            b, f = baseline["per_class_recall"][c], final["per_class_recall"][c]
            if b == b and f == f and 100.0 * (b - f) > budgets.max_safety_recall_drop:
                v.append(f"recall of safety-critical class {c} ({CLASS_NAMES[c]}) dropped {100 * (b - f):.2f} "
                         f"points ({100 * b:.2f}% -> {100 * f:.2f}%), budget {budgets.max_safety_recall_drop:.2f}")
    if budgets.max_latency_ms is not None and final["latency_ms_p50"] > budgets.max_latency_ms:
        v.append(f"batch-1 p50 latency {final['latency_ms_p50']:.3f} ms exceeds {budgets.max_latency_ms:.3f} ms")
    if budgets.max_size_bytes is not None and final["size_bytes"] > budgets.max_size_bytes:
        v.append(f"size {final['size_bytes']:,} bytes exceeds {budgets.max_size_bytes:,} bytes")
    if budgets.max_corruption_accuracy_drop is not None:
        if "corruption_accuracy" not in final or "corruption_accuracy" not in baseline:
            v.append("corruption accuracy budget set but corruption accuracy was not measured")
        else:
            drop = 100.0 * (baseline["corruption_accuracy"] - final["corruption_accuracy"])
            if drop > budgets.max_corruption_accuracy_drop:
                v.append(f"corruption accuracy dropped {drop:.2f} points, budget "
                         f"{budgets.max_corruption_accuracy_drop:.2f}")
    return {"passed": not v, "violations": v}


def _ratio_target(label: str, got: float, goal: float, more: str) -> dict[str, Any]:
    met = got >= goal
    return {"target": label, "achieved": f"{got:.2f}x", "met": met,
            "shortfall": None if met else f"{goal / got:.2f}x more {more} needed"}


def check_targets(baseline: dict[str, Any], final: dict[str, Any], targets: Targets) -> list[dict[str, Any]]:
    """Each target with what was achieved and, when missed, by how much."""
    rows = []
    if targets.min_latency_speedup is not None:
        rows.append(_ratio_target(f"batch-1 latency at least {targets.min_latency_speedup:g}x lower",
                                  baseline["latency_ms_p50"] / final["latency_ms_p50"],
                                  targets.min_latency_speedup, "speed-up"))
    if targets.min_size_reduction is not None:
        rows.append(_ratio_target(f"at least {targets.min_size_reduction:g}x smaller on disk",
                                  baseline["size_bytes"] / final["size_bytes"], targets.min_size_reduction,
                                  "reduction"))
    if targets.max_accuracy_drop is not None:
        drop = 100.0 * (baseline["accuracy"] - final["accuracy"])
        met = drop <= targets.max_accuracy_drop
        rows.append({"target": f"accuracy within {targets.max_accuracy_drop:g} points",
                     "achieved": f"{-drop:+.2f} points", "met": met,
                     "shortfall": None if met else f"{drop - targets.max_accuracy_drop:.2f} points over"})
    return rows

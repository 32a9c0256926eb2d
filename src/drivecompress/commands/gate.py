"""``drivecompress gate BASELINE CANDIDATE``: the safety gate on two existing models, image by image."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from drivecompress.commands.base import command


@command("gate", "Apply the safety gate to two existing models: evaluate BASELINE and CANDIDATE on the same test "
         "images and compare them image by image, counting evidence in physical signs (GTSRB's test tracks are "
         "recovered): pooled paired non-inferiority over all and over the safety-critical images, and per class "
         "a test of whether its loss exceeds its allowance beyond what the candidate's own flips on the other "
         "classes explain (Holm over all classes; safety-critical classes refuse, others warn). Budgets come "
         "from --recipe (default: recipes/default.yaml) and --set. Exit 0 passed, 3 refused.")
def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("baseline", metavar="BASELINE", help="checkpoint folder, .onnx file, 'baseline' or 'searched'")
    p.add_argument("candidate", metavar="CANDIDATE", help="checkpoint folder or .onnx file")
    p.add_argument("--recipe", type=Path, help="recipe whose budgets apply (default: recipes/default.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a budget, e.g. --set budgets.max_safety_recall_drop=2 (repeatable)")
    p.add_argument("--subset", type=int, help="compare on a seeded subset of N test images (default: all)")


@_args.bind
def _run(a: argparse.Namespace) -> dict[str, Any]:
    from drivecompress.api import as_data, as_model, as_recipe
    from drivecompress.data.gtsrb import shipped
    from drivecompress.errors import BadInputError, GateRefusedError
    from drivecompress.evaluate.measure import evaluate_predictor
    from drivecompress.pipeline.gate import NOISE_TRIALS, check_gate, noise_sentence
    from drivecompress.utils.device import select_device

    if a.subset is not None and a.subset < 1:
        raise BadInputError("--subset must be >= 1")
    device = select_device(a.device)
    recipe = as_recipe(a.recipe or shipped("recipes") / "default.yaml", a.overrides)
    data = as_data(a.data)
    test = data.test.head(a.subset, seed=recipe.seed)
    metrics = []
    for arg in (a.baseline, a.candidate):
        model = as_model(arg)
        model.check_against(data)
        metrics.append(evaluate_predictor(model.predictor(device=device), test, safety_critical=data.safety_critical,
                                          num_classes=data.num_classes))
    groups, groups_how = data.test_groups(test)
    gate = check_gate(metrics[0], metrics[1], recipe.budgets, sorted(data.safety_critical), data.class_names, test.y,
                      noise_trials=NOISE_TRIALS, groups=groups, groups_how=groups_how)
    result = {"baseline": a.baseline, "candidate": a.candidate, "images": len(test),
              "accuracy": f"{100 * metrics[0]['accuracy']:.2f}% -> {100 * metrics[1]['accuracy']:.2f}%",
              "passed": gate["passed"], "violations": gate["violations"], "warnings": gate["warnings"],
              "evidence_units": gate.get("evidence_units"),
              "lost_gained": {f"{r['class']} {r['name']}": f"-{r['lost']} +{r['gained']} of {r['n']} "
                              f"({r['signs_lost']} of {r['signs']} signs), p_holm {r['p_holm']:.2g}"
                              + (f", {r['lost_baseline_below_half']} lost at baseline p < 0.5"
                                 if r.get("lost_baseline_below_half") else "")
                              for r in gate["classes"] if r["lost"] or r["gained"]},
              "pooled": {r["scope"]: f"{r['difference_points']:+.2f} pts (bound {r['lower_bound_points']:+.2f})"
                         for r in gate["pooled"]}}
    if "noise" in gate:
        result["noise"] = noise_sentence(gate["noise"])
    if not gate["passed"]:
        exc = GateRefusedError("; ".join(gate["violations"]))
        exc.summary = result  # type: ignore[attr-defined]
        raise exc
    return result

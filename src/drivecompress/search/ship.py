"""Ship one finalist of a search as a model folder like ``baseline/`` (the repository's ``searched/``).

A finalist lives deep in a search folder (``DIR/finalists/NNNN/run``) next to its teacher, its intermediate
steps and the study; what a user takes to the car is one folder: the checkpoint (safetensors + JSON, so
``searched`` loads wherever MODEL is accepted), the int8 deploy model ``model.onnx``, the recipe that
reproduces it, the search's figures (``search.json``) and a card written from those recorded measurements,
the gate's verdict included. Nothing is measured again here: the finalist's run already measured it side by
side with the teacher.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from drivecompress.errors import BadInputError


def ship_finalist(search_dir: str | Path, dest: str | Path, trial: int | None = None,
                  commands: list[str] | None = None, notes: str | None = None,
                  retrained: str | Path | None = None) -> Path:
    """Copy finalist ``trial`` of the search in ``search_dir`` (default: the one the search chose, i.e. the
    fastest that the gate passed) into the new folder ``dest`` with a model card; returns ``dest``.

    A finalist the gate refused can be shipped only when named: its card then says so at the top. ``dest``
    must not exist (nothing on disk is overwritten); the folder appears whole or not at all. ``commands``:
    the search commands that produced ``search_dir``, quoted in the card; ``notes``: hand-written Markdown for
    the card's last section (what the figures do not say: how it compares, known weaknesses). ``retrained``:
    the folder of a ``compress`` run that trained this finalist's very network with another recipe (longer
    distillation, another teacher); its model, recipe and measurements are shipped instead of the finalist
    run's, since the search chose the network and a better training of it is what a user should get."""
    search_dir, dest = Path(search_dir), Path(dest)
    try:
        doc = json.loads((search_dir / "pareto.json").read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{search_dir / 'pareto.json'}: no readable search summary ({exc})") from exc
    rows = {int(r["trial"]): r for r in doc.get("finalists") or []}
    if not rows:
        raise BadInputError(f"{search_dir}: the search has no finalists (run it with --finalists K first)")
    if trial is None:
        if doc.get("chosen") is None:
            raise BadInputError(f"{search_dir}: no finalist passed the gate; name one to ship anyway "
                                f"(trained: {', '.join(map(str, sorted(rows)))})")
        trial = int(doc["chosen"])
    if trial not in rows:
        raise BadInputError(f"{search_dir}: trial {trial} is not a finalist (trained: "
                            f"{', '.join(map(str, sorted(rows)))})")
    if dest.exists():
        raise BadInputError(f"{dest}: already exists; remove it or ship into another folder")
    row = rows[trial]
    front_row = next((r for r in doc.get("pareto", []) if int(r["trial"]) == trial), None)
    run = search_dir / "finalists" / f"{trial:04d}" / "run" if retrained is None else Path(retrained)
    recipe = search_dir / "finalists" / f"{trial:04d}" / "recipe.yaml" if retrained is None else run / "recipe.yaml"
    try:
        report = json.loads((run / "report.json").read_text())
        deploy = run / report["final"]["artifact"]
    except (OSError, ValueError, KeyError) as exc:
        raise BadInputError(f"{run / 'report.json'}: the run report is missing or incomplete "
                            f"({exc})") from exc
    checkpoints = sorted((run / "steps").glob("*/model/model.safetensors"))
    if not deploy.is_file() or not checkpoints or not recipe.is_file():
        raise BadInputError(f"{run}: the run has no deploy model, checkpoint or recipe")
    if retrained is not None and _network(report) != _network(_finalist_recipe(search_dir, trial)):
        raise BadInputError(f"{run}: its recipe's first step does not train trial {trial}'s network (a "
                            f"'distill' step with the finalist's spec)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}-", dir=dest.parent) as tmp:
        part = Path(tmp) / dest.name
        part.mkdir()
        for name in ("model.safetensors", "model.json"):
            shutil.copy2(checkpoints[-1].parent / name, part / name)
        shutil.copy2(deploy, part / "model.onnx")
        shutil.copy2(recipe, part / "recipe.yaml")
        summary = {k: doc.get(k) for k in ("trials", "phases", "teacher_fp32_latency_ms",
                                           "latency_trial_vs_serial", "spearman_proxy_vs_full", "chosen")}
        shipped = {"run": str(run), "retrained": retrained is not None, "accuracy": report["final"]["accuracy"],
                   "gate_passed": bool(report["gate"].get("passed"))}
        search = {"shipped_trial": trial, "shipped": shipped, "finalist": row, "front_row": front_row,
                  "commands": commands or [], **summary, "finalists": list(rows.values())}
        (part / "search.json").write_text(json.dumps(search, indent=2) + "\n")
        (part / "MODEL_CARD.md").write_text(model_card(search, report, notes), encoding="utf-8")
        os.replace(part, dest)  # same file system: the folder appears whole
    return dest


def model_card(search: dict[str, Any], report: dict[str, Any], notes: str | None = None) -> str:
    """The card of a shipped finalist: what it is, the search that found it, the recipe that reproduces it,
    what it measured and, first, whether the gate passed it."""
    row, trial = search["finalist"], search["shipped_trial"]
    final, ratios, gate = report["final"], report["ratios"], report["gate"]
    base = report["baseline"]
    steps = {s["type"]: s for s in report.get("steps", [])}
    spec = (search.get("front_row") or {}).get("spec") or report.get("recipe", {}).get("steps", [{}])[0].get("spec")
    spec = {k: v for k, v in (spec or {}).items() if k not in ("num_classes", "input_norm")}
    machine = report.get("machine", {})
    rho = search.get("spearman_proxy_vs_full")
    trials = ", ".join(f"{n} {state}" for state, n in (search.get("trials") or {}).items())
    verdict = ("**passed** by the gate" if gate.get("passed") else
               f"**refused by the gate** ({len(gate.get('violations', []))} violations, listed below): it is "
               "faster and smaller than the baseline but measurably less accurate, so it is not a drop-in "
               "replacement; it ships as the search's best result, to be measured against, not deployed blind")
    phases = search.get("phases") or {}
    retrained = (search.get("shipped") or {}).get("retrained")
    how = ("its network trained by a longer recipe than the search's finalist (the recipe below; the finalist's "
           f"own run: {100 * (row.get('accuracy') or 0):.2f}% at {row.get('speedup') or 0:.2f}x)" if retrained
           else "trained fully")
    lines = [
        "# Model card: drivecompress searched model",
        "",
        f"Trial {trial} of `drivecompress search`, {how}, int8 (QAT), {verdict}.",
        "",
        "| | |",
        "|---|---|",
        f"| network | `{json.dumps(spec)}` |",
        f"| MACs / weights | {final.get('macs') or 0:,} / {final.get('params') or 0:,} |",
        f"| test accuracy, int8 (`model.onnx`) | {100 * final['accuracy']:.2f}% "
        f"({ratios['accuracy_delta_points']:+.2f} points vs the baseline's {100 * base['accuracy']:.2f}%) |",
        f"| batch-1 speed-up vs the baseline's fp32 ONNX (side by side, one thread) | "
        f"{ratios['latency_ms_p50_ratio']:.2f}x (p50 {final['latency_ms_p50']:.3f} ms) |",
        f"| smaller than the baseline's fp32 ONNX | {ratios['size_bytes_ratio']:.2f}x ({final['size_bytes']:,} B) |",
        f"| accuracy by sign size | {_by_size(final)} |",
        f"| machine | {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores "
        f"({' '.join(machine.get('cpu_flags', []))}), onnxruntime {machine.get('onnxruntime', '?')} |",
        "",
        "## Files",
        "",
        "- `model.safetensors` + `model.json`: the checkpoint (float weights after QAT); `searched` is accepted "
        "wherever MODEL is (`drivecompress eval searched`, `compress searched ...`).",
        "- `model.onnx`: the int8 deploy model (QDQ with the scales QAT trained) for ONNX Runtime: "
        "`drivecompress eval searched/model.onnx`.",
        "- `recipe.yaml`: reproduces the model from the baseline: "
        "`drivecompress compress baseline --recipe searched/recipe.yaml --out runs/searched_again`.",
        "- `search.json`: the search's figures (phases, front row, all finalists).",
        "",
        "## The search that found it",
        "",
        *[f"- `{c}`" for c in search.get("commands") or []],
        f"- Study: {trials} trials; proxy accuracy of this network {100 * row['proxy_accuracy']:.2f}% "
        f"(short distillation on a subset); phases (s): proxy search {phases.get('search_s')}, serial "
        f"re-measure {phases.get('remeasure_s')}, finalists {phases.get('finalists_s')}.",
        f"- Finalists (trained fully): {_finalists(search)}; Spearman rank correlation proxy vs full accuracy: "
        f"{'n/a (fewer than 3)' if rho is None else f'{rho:+.2f}'}.",
        f"- This model's training: distillation {steps.get('distill', {}).get('seconds')} s, QAT "
        f"{steps.get('qat', {}).get('seconds')} s.",
        "",
        "## The recipe that reproduces it",
        "",
        f"{report.get('recipe', {}).get('description', '')}",
        "",
        "## Gate",
        "",
        *([f"- {v}" for v in gate.get("violations", [])] or ["- passed: no violations"]),
        "",
    ]
    if notes:
        lines += ["## Notes", "", notes.strip(), ""]
    return "\n".join(lines)


def _finalist_recipe(search_dir: Path, trial: int) -> dict[str, Any]:
    """The finalist's recipe as its run recorded it (the shape ``_network`` reads)."""
    try:
        return {"recipe": yaml.safe_load((search_dir / "finalists" / f"{trial:04d}" / "recipe.yaml").read_text())}
    except (OSError, yaml.YAMLError) as exc:
        raise BadInputError(f"{search_dir}: finalist {trial} has no readable recipe.yaml ({exc})") from exc


def _network(report: dict[str, Any]) -> str:
    """The network a run trained (its first step's spec, less what data and teacher set), comparable as text."""
    spec = (((report.get("recipe") or {}).get("steps") or [{}])[0] or {}).get("spec") or {}
    return json.dumps({k: v for k, v in spec.items() if k not in ("num_classes", "input_norm")}, sort_keys=True)


def _by_size(final: dict[str, Any]) -> str:
    sizes = final.get("accuracy_by_size") or {}
    return ", ".join(f"{k} {100 * v['accuracy']:.2f}% ({v['count']:,})" for k, v in sizes.items()) or "-"


def _finalists(search: dict[str, Any]) -> str:
    return "; ".join(
        f"trial {r['trial']} {100 * (r['accuracy'] or 0):.2f}% at {r['speedup'] or 0:.2f}x "
        f"({'passed' if r['gate_passed'] else 'refused'})" for r in search.get("finalists", []))

"""Run a recipe: measure the input model, run each step, measure after each, gate, write the run folder.

Run folder (all writes atomic):
  recipe.yaml            the resolved recipe (defaults filled in, overrides applied)
  baseline.onnx          the unmodified input model, fp32 (parity checked)
  steps/NN-type/         per-step checkpoint (model/ safetensors + JSON, model.onnx when quantized) and
                         done.json, written last: its presence marks the step complete for --resume
  model.onnx             the final model if the gate passed, else model.rejected.onnx
  report.json, report.html
"""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from drivecompress.data.dataset import make_splits
from drivecompress.data.gtsrb import load_gtsrb
from drivecompress.data.transforms import deploy_input
from drivecompress.errors import BadInputError, GateRefusedError
from drivecompress.evaluate.compare import measure_onnx, ratios, speed_verdict
from drivecompress.evaluate.complexity import count_macs, count_params
from drivecompress.evaluate.latency import SpeedConfig
from drivecompress.evaluate.loading import load_model_arg
from drivecompress.evaluate.machine import machine_info
from drivecompress.evaluate.predictor import OnnxPredictor
from drivecompress.evaluate.robustness import RobustnessConfig, robustness_report
from drivecompress.export.onnx import export_onnx
from drivecompress.pipeline.gate import check_gate, check_targets
from drivecompress.pipeline.recipe import Recipe
from drivecompress.pipeline.registry import Context, State, lookup
from drivecompress.train.checkpoint import load_checkpoint, save_checkpoint
from drivecompress.utils.device import seed_everything, select_device
from drivecompress.utils.io import atomic_write_json, atomic_write_text

_err = Console(stderr=True)


def _measure(state: State, artifact: Path, test, recipe: Recipe, speed: SpeedConfig) -> dict[str, Any]:
    """The same metrics for every stage, measured on ONNX Runtime; robustness figures when the recipe asks
    (adversarial examples crafted on the float module, transferred when the artifact is quantized)."""
    m = measure_onnx(artifact, test, speed)
    m["macs"] = count_macs(state.module)
    m["params"] = count_params(state.module)
    m["artifact"] = str(artifact.name)
    ev = recipe.evaluation
    if ev.robustness:
        cfg = RobustnessConfig(corruption_images=ev.robustness_images, attack_images=ev.attack_images,
                               seed=recipe.seed)
        rob = robustness_report(OnnxPredictor(artifact), test, cfg, state.module, transfer=state.onnx_path is not None)
        m["corruption_accuracy"] = rob["corruption_accuracy"]
        m["adversarial_accuracy"] = rob["adversarial_accuracy"]
        m["robustness"] = {k: rob[k] for k in ("corruptions", "min_safety_recall_under_corruption", "adversarial")}
    return m


def _prepare_out(out: Path, recipe: Recipe, resume: bool) -> None:
    stored = out / "recipe.yaml"
    if out.exists() and any(out.iterdir()) and not resume:
        raise BadInputError(f"{out}: already holds a run; use --resume to continue it or choose another --out")
    if resume and stored.exists() and yaml.safe_load(stored.read_text()) != recipe.resolved():
        raise BadInputError(f"{stored}: the recipe differs from the one this run started with; cannot resume")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stored, yaml.safe_dump(recipe.resolved(), sort_keys=False))


def _load_done(step_dir: Path) -> tuple[State, dict[str, Any]] | None:
    done = step_dir / "done.json"
    if not done.exists():
        return None
    import json

    rec = json.loads(done.read_text())
    module, _ = load_checkpoint(step_dir / "model")
    onnx_path = step_dir / "model.onnx" if (step_dir / "model.onnx").exists() else None
    return State(module=module, onnx_path=onnx_path, notes=rec.get("notes", {})), rec


def run_recipe(model_arg: str, recipe: Recipe, out: Path, resume: bool = False, data: str | None = None,
               device: str | None = None) -> dict[str, Any]:
    """Run ``recipe`` on ``model_arg`` into ``out``; raises GateRefusedError (exit 3) when budgets fail."""
    out = Path(out)
    _prepare_out(out, recipe, resume)
    loaded = load_model_arg(model_arg)
    if loaded.module is None:
        raise BadInputError(f"{model_arg}: compress needs a checkpoint folder or 'baseline', not an .onnx file")
    splits = make_splits(load_gtsrb(data), seed=recipe.seed)
    test = splits.test.head(recipe.evaluation.test_subset, seed=recipe.seed)
    check = deploy_input(test.x[:64])
    speed = SpeedConfig(runs=recipe.evaluation.latency_runs, throughput_seconds=recipe.evaluation.throughput_seconds)
    dev = select_device(device)
    base_json = out / "baseline_metrics.json"
    if resume and base_json.exists():
        import json

        baseline = json.loads(base_json.read_text())
    else:
        _err.print(f"[bold]compress[/]: measuring the input model {loaded.source} ...")
        export_onnx(loaded.module, out / "baseline.onnx", check)
        baseline = _measure(State(module=loaded.module), out / "baseline.onnx", test, recipe, speed)
        atomic_write_json(base_json, baseline)
    # Steps change their model in place; the input model stays untouched as the distillation teacher.
    state = State(module=copy.deepcopy(loaded.module))
    records = []
    for i, (kind, cfg) in enumerate(recipe.steps):
        name = cfg.name or kind
        step_dir = out / "steps" / f"{i:02d}-{kind}"
        prev = _load_done(step_dir) if resume else None
        if prev is not None:
            state, rec = prev
            _err.print(f"[bold]compress[/]: step {i + 1}/{len(recipe.steps)} {name}: done earlier, resumed")
            records.append(rec)
            continue
        if step_dir.exists():
            shutil.rmtree(step_dir)  # a step killed midway restarts from the previous step's state
        step_dir.mkdir(parents=True)
        _err.print(f"[bold]compress[/]: step {i + 1}/{len(recipe.steps)} {name} ...")
        seed_everything(recipe.seed + i)
        _, handler = lookup(kind)
        if cfg.needs_float_model and state.onnx_path is not None:
            raise BadInputError(f"step {i} ({kind}): needs a float model, but an earlier step already quantized it")
        t0 = time.perf_counter()
        try:
            state = handler(state, cfg, Context(splits, loaded.module, step_dir, dev, recipe.seed + i))
        except ValueError as exc:
            raise BadInputError(f"step {i} ({kind}): {exc}") from exc
        seconds = time.perf_counter() - t0
        save_checkpoint(step_dir / "model", state.module)
        artifact = state.onnx_path or export_onnx(state.module, step_dir / "model_fp32.onnx", check).path
        metrics = _measure(state, artifact, test, recipe, speed)
        rec = {"name": name, "type": kind, "seconds": round(seconds, 1), "metrics": metrics, "notes": state.notes}
        atomic_write_json(step_dir / "done.json", rec)
        records.append(rec)
    return _finish(out, recipe, loaded, baseline, records, state)


def _finish(out: Path, recipe: Recipe, loaded, baseline, records, state: State) -> dict[str, Any]:
    final = records[-1]["metrics"] if records else baseline
    gate = check_gate(baseline, final, recipe.budgets)
    last_dir = out / "steps" / f"{len(records) - 1:02d}-{records[-1]['type']}"
    artifact = last_dir / final["artifact"]
    target = out / ("model.onnx" if gate["passed"] else "model.rejected.onnx")
    for stale in (out / "model.onnx", out / "model.rejected.onnx"):
        if stale.exists() and stale != target:
            stale.unlink()
    shutil.copyfile(artifact, target)
    report = {
        "baseline": baseline,
        "steps": [{k: r[k] for k in ("name", "type", "seconds", "metrics")} | {"notes": r.get("notes", {})}
                  for r in records],
        "final": final,
        "gate": gate,
        "targets": check_targets(baseline, final, recipe.targets),
        "ratios": ratios(baseline, final),
        "speed_verdict": speed_verdict(baseline, final, "the final model"),
        "model": str(loaded.source),
        "artifact": target.name,
        "recipe": recipe.resolved(),
        "machine": machine_info(),
    }
    atomic_write_json(out / "report.json", report)
    from drivecompress.report.html import write_html

    write_html(report, out / "report.html")
    if not gate["passed"]:
        raise GateRefusedError(f"{out / 'report.json'}: " + "; ".join(gate["violations"]))
    return report

"""Run a recipe: measure the input model, run each step, measure after each, gate, write the run folder.

The runner only sequences: every step's algorithm lives next to its technique (``core.register_step``).

Run folder (all writes atomic; nothing is written before every input has been checked):
  recipe.yaml            the resolved recipe (defaults filled in, overrides applied)
  baseline.onnx          the unmodified input model, fp32 (parity checked when exported from PyTorch)
  steps/NN-type/         per-step checkpoint (model/ safetensors + JSON, model.onnx when quantized) and
                         done.json, written last: its presence marks the step complete for --resume
  model.onnx             the final model if the gate passed, else model.rejected.onnx
  report.json, report.html
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import yaml
from rich.console import Console

from drivecompress.core import Context, State, lookup
from drivecompress.data.api import Data
from drivecompress.data.gtsrb import repo_path
from drivecompress.data.transforms import deploy_input
from drivecompress.distill.step import TeacherEnsemble, teacher_module
from drivecompress.errors import BadInputError, GateRefusedError
from drivecompress.evaluate.compare import measure_onnx, ratios, speed_verdict
from drivecompress.evaluate.complexity import count_macs, count_params, onnx_macs
from drivecompress.evaluate.latency import SpeedConfig, ratio_stability, side_by_side
from drivecompress.evaluate.loading import LoadedModel, check_module_against, load_model_arg
from drivecompress.evaluate.machine import machine_info
from drivecompress.evaluate.predictor import OnnxPredictor
from drivecompress.evaluate.robustness import RobustnessConfig, robustness_report
from drivecompress.export.onnx import export_onnx
from drivecompress.pipeline.gate import NOISE_TRIALS, check_gate, check_targets
from drivecompress.pipeline.recipe import Recipe
from drivecompress.train import distributed as ddp
from drivecompress.train.checkpoint import load_checkpoint, save_checkpoint, weights_sha256
from drivecompress.utils.device import seed_everything, select_device
from drivecompress.utils.io import atomic_write_json, atomic_write_text, file_sha256, folder_sha256
from drivecompress.utils.runlock import LOCK_NAME, RunLock

_err = Console(stderr=True)


def check_plan(recipe: Recipe, module: nn.Module | None, source: str) -> None:
    """Refuse, before anything is written, a recipe the input cannot take: a step that needs the PyTorch
    module on an ONNX input, a float-model step after a quantization step, or what a step's own
    ``check_input`` refuses (e.g. a start checkpoint made from another model)."""
    quantized_at, made = None, False
    for i, (kind, cfg) in enumerate(recipe.steps):
        if cfg.needs_module and module is None and not made:
            raise BadInputError(f"{source}: step {i} ({kind}) needs {cfg.needs}, but an .onnx input has only the "
                                "graph (give a checkpoint folder or an nn.Module, or use graph-only steps such as ptq)")
        cfg.check_input(module, f"recipe step {i} ({kind})")
        made = made or cfg.makes_module
        if quantized_at is not None:
            raise BadInputError(f"recipe step {i} ({kind}): needs a float model, but step {quantized_at} already "
                                "quantized it")
        if kind in ("ptq", "qat"):
            quantized_at = i


def _measure(state: State, artifact: Path, data: Data, recipe: Recipe, speed: SpeedConfig) -> dict[str, Any]:
    """The same metrics for every stage, measured on ONNX Runtime; robustness figures when the recipe asks
    (adversarial examples crafted on the float module, transferred when the artifact is quantized)."""
    test = data.test.head(recipe.evaluation.test_subset, seed=recipe.seed)
    m = measure_onnx(artifact, test, speed, data.safety_critical, data.num_classes)
    if state.module is not None:
        m["macs"] = count_macs(state.module, data.input_shape)
        m["params"] = count_params(state.module)
    else:
        m["macs"] = onnx_macs(artifact)
    m["artifact"] = str(artifact.name)
    ev = recipe.evaluation
    if ev.robustness:
        cfg = RobustnessConfig(corruption_images=ev.robustness_images, attack_images=ev.attack_images,
                               seed=recipe.seed, safety_critical=tuple(sorted(data.safety_critical)))
        rob = robustness_report(OnnxPredictor(artifact), test, cfg, state.module, transfer=state.onnx_path is not None)
        m["corruption_accuracy"] = rob["corruption_accuracy"]
        m["adversarial_accuracy"] = rob.get("adversarial_accuracy")
        m["robustness"] = {k: rob[k] for k in ("corruptions", "min_safety_recall_under_corruption", "adversarial")}
    return m


def load_teacher(recipe: Recipe, loaded: LoadedModel, data: Data) -> nn.Module | None:
    """The distillation teacher: the recipe's ``teacher`` checkpoint (or a list of them, which teach as one
    ``TeacherEnsemble``), else the input model. Refused with the key named, before anything is written."""
    if recipe.teacher is None:
        return loaded.module
    return load_teachers(recipe.teacher, loaded.module, data)


def load_teachers(names: str | list[str], template: nn.Module | None, data: Data,
                  label: str = "recipe key 'teacher'") -> nn.Module:
    """One checkpoint folder, or a list that teaches as one ``TeacherEnsemble``; each checked to score this
    data's classes on its input shape (``template`` rebuilds a user-defined network). Errors name ``label``."""
    members = [_one_teacher(n, template, data, label) for n in ([names] if isinstance(names, str) else names)]
    return members[0] if isinstance(names, str) else TeacherEnsemble(members)


def _one_teacher(name: str, template: nn.Module | None, data: Data, label: str) -> nn.Module:
    folder = repo_path(name)
    where = f"{label} ({name})"
    if folder.suffix.lower() == ".onnx" and folder.is_file():  # a graph teaches through ONNX Runtime
        try:
            return teacher_module(load_model_arg(folder).check_against(data))
        except BadInputError as exc:
            raise BadInputError(f"{where}: {exc}") from exc
    if not (folder / "model.json").is_file():
        raise BadInputError(f"{where}: {folder}: no checkpoint there (model.json missing)")
    try:
        teacher = load_checkpoint(folder, template=template)[0]
    except BadInputError as exc:
        raise BadInputError(f"{where}: {exc}") from exc
    check_module_against(teacher, data, where)
    return teacher


def input_fingerprints(loaded: LoadedModel, data: Data, recipe: Recipe,
                       teacher: nn.Module | None = None) -> dict[str, str]:
    """sha256 of the input model (its weights, or the ONNX file), of the data, of the resolved recipe and of a
    recipe-named teacher's weights: what ``--resume`` must find unchanged."""
    model = weights_sha256(loaded.module) if loaded.module is not None else file_sha256(loaded.onnx_path)
    recipe_hash = hashlib.sha256(json.dumps(recipe.resolved(), sort_keys=True, default=str).encode()).hexdigest()
    found = {"model": model, "data": data.fingerprint(), "recipe": recipe_hash}
    if recipe.teacher is not None and teacher is not None:
        found["teacher"] = weights_sha256(teacher)
    return found


def _check_out(out: Path, recipe: Recipe, resume: bool, inputs: dict[str, str]) -> None:
    """Every check on --out, before anything is written (read-only)."""
    stored = out / "recipe.yaml"
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{out}: --out names a file, not a folder")
    content = [p for p in out.iterdir() if p.name != LOCK_NAME] if out.is_dir() else []
    if content and not resume:
        raise BadInputError(f"{out}: already holds a run; use --resume to continue it or choose another --out")
    if resume and stored.exists() and yaml.safe_load(stored.read_text()) != recipe.resolved():
        raise BadInputError(f"{stored}: the recipe differs from the one this run started with; cannot resume")
    if resume and (out / "steps").is_dir():
        for done in sorted((out / "steps").glob("*/done.json")):
            _verified_record(done.parent)
    record = out / "inputs.json"
    if resume and record.exists():
        before = json.loads(record.read_text())
        changed = [k for k in ("model", "data", "recipe", "teacher") if before.get(k) != inputs.get(k)]
        if changed:
            raise BadInputError(f"{record}: the {' and the '.join(changed)} differ{'s' if len(changed) == 1 else ''} "
                                f"from the run's start (sha256); cannot resume with other inputs")


def _write_out(out: Path, recipe: Recipe, inputs: dict[str, str]) -> None:
    try:
        if not (out / "recipe.yaml").exists():
            atomic_write_text(out / "recipe.yaml", yaml.safe_dump(recipe.resolved(), sort_keys=False))
        if not (out / "inputs.json").exists():
            atomic_write_json(out / "inputs.json", inputs)
    except OSError as exc:
        raise BadInputError(f"{out}: cannot write the run folder ({exc.strerror})") from exc


def _verified_record(step_dir: Path) -> dict[str, Any]:
    """A completed step's done.json, after checking that its files still have the sha256 recorded there."""
    try:
        rec = json.loads((step_dir / "done.json").read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{step_dir / 'done.json'}: unreadable ({exc}); cannot resume from it") from exc
    files = rec.get("files")  # absent in runs started before checksums were recorded
    now = folder_sha256(step_dir, skip=("done.json",)) if files is not None else {}
    changed = sorted(k for k in set(files or {}) | set(now) if (files or {}).get(k) != now.get(k))
    if changed:
        raise BadInputError(f"{step_dir / changed[0]}: changed since the step completed (sha256 differs from "
                            "done.json); cannot resume from it")
    return rec


def _load_done(step_dir: Path, template: nn.Module | None) -> tuple[State, dict[str, Any]] | None:
    done = step_dir / "done.json"
    if not done.exists():
        return None
    rec = _verified_record(step_dir)
    module = load_checkpoint(step_dir / "model", template=template)[0] if (step_dir / "model").exists() else None
    onnx_path = step_dir / "model.onnx" if (step_dir / "model.onnx").exists() else None
    return State(module=module, onnx_path=onnx_path, notes=rec.get("notes", {})), rec


def _baseline(loaded: LoadedModel, out: Path, data: Data, recipe: Recipe, speed: SpeedConfig,
              resume: bool) -> dict[str, Any]:
    base_json = out / "baseline_metrics.json"
    if resume and base_json.exists():
        return json.loads(base_json.read_text())
    _err.print(f"[bold]compress[/]: measuring the input model {loaded.source} ...")
    if loaded.module is not None:
        export_onnx(loaded.module, out / "baseline.onnx", deploy_input(data.test.x[:64]))
    else:
        shutil.copyfile(loaded.onnx_path, out / "baseline.onnx")
    baseline = _measure(State(module=loaded.module), out / "baseline.onnx", data, recipe, speed)
    atomic_write_json(base_json, baseline)
    return baseline


def run_recipe(loaded: LoadedModel, recipe: Recipe, data: Data, out: str | Path, resume: bool = False,
               device: str | torch.device | None = None) -> dict[str, Any]:
    """Run ``recipe`` on the loaded input model into ``out``; raises GateRefusedError (exit 3) when the gate
    refuses (the run folder and the rejected model are kept) and BadInputError for inputs it cannot take."""
    out = Path(out)
    check_plan(recipe, loaded.module, str(loaded.source))
    loaded.check_against(data)
    teacher = load_teacher(recipe, loaded, data)
    dev = device if isinstance(device, torch.device) else select_device(device)
    inputs = input_fingerprints(loaded, data, recipe, teacher)
    _check_out(out, recipe, resume, inputs)
    ddp.barrier()  # every rank has checked before rank 0 writes anything
    if not ddp.is_main():
        return _run_steps(loaded, recipe, data, out, resume, dev, inputs, teacher)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"{out}: cannot write the run folder ({exc.strerror})") from exc
    with RunLock(out):
        _check_out(out, recipe, resume, inputs)  # again under the lock: another run may have started meanwhile
        _write_out(out, recipe, inputs)
        return _run_steps(loaded, recipe, data, out, resume, dev, inputs, teacher)


def _run_steps(loaded: LoadedModel, recipe: Recipe, data: Data, out: Path, resume: bool,
               dev: torch.device, inputs: dict[str, str], teacher: nn.Module | None) -> dict[str, Any]:
    speed = SpeedConfig(runs=recipe.evaluation.latency_runs, throughput_seconds=recipe.evaluation.throughput_seconds)
    check = deploy_input(data.test.x[:64])
    # Under torchrun every rank runs the steps (their training is data-parallel); rank 0 alone writes the run
    # folder and measures, the others write into a scratch folder and wait, so no measurement shares the CPU.
    main = ddp.is_main()
    scratch = Path(tempfile.mkdtemp(prefix=f"drivecompress-rank{ddp.rank()}-")) if not main else None
    baseline = _baseline(loaded, out, data, recipe, speed, resume) if main else {}
    ddp.barrier()
    # Steps change their model in place; the input model stays untouched (the baseline, and the distillation
    # teacher unless the recipe names another).
    state = State(module=copy.deepcopy(loaded.module), fp32_onnx=out / "baseline.onnx")
    records = []
    # Step checkpoints exist only for a module input, so inputs["model"] is then its weights' sha256.
    origin = {"model_sha256": inputs["model"], "source": str(loaded.source), "recipe": recipe.name}
    for i, (kind, cfg) in enumerate(recipe.steps):
        name = cfg.name or kind
        step_dir = out / "steps" / f"{i:02d}-{kind}"
        prev = _load_done(step_dir, loaded.module) if resume else None
        if prev is not None:
            state, rec = prev
            state.fp32_onnx = out / "baseline.onnx"
            if main:
                _err.print(f"[bold]compress[/]: step {i + 1}/{len(recipe.steps)} {name}: done earlier, resumed")
            records.append(rec)
            continue
        if scratch is not None:
            step_dir = scratch / step_dir.name
        elif step_dir.exists():
            shutil.rmtree(step_dir)  # a step killed midway restarts from the previous step's state
        step_dir.mkdir(parents=True)
        if main:
            _err.print(f"[bold]compress[/]: step {i + 1}/{len(recipe.steps)} {name} ...")
        seed_everything(recipe.seed + i)
        _, handler = lookup(kind)
        t0 = time.perf_counter()
        try:
            state = handler(state, cfg, Context(data, teacher, step_dir, dev, recipe.seed + i, loaded.module))
        except ValueError as exc:
            if isinstance(exc, BadInputError):
                raise
            raise BadInputError(f"step {i} ({kind}): {exc}") from exc
        seconds = time.perf_counter() - t0
        if not main:
            ddp.barrier()  # rank 0 saves and measures the step
            continue
        if state.module is not None:
            # derived_from: a later recipe may start from this checkpoint (step type "start") only on the
            # same input model, which it checks against this sha256.
            save_checkpoint(step_dir / "model", state.module,
                            {"class_names": list(data.class_names),
                             "derived_from": {**origin, "step": i, "step_type": kind}},
                            input_shape=data.input_shape)
        artifact = state.onnx_path or export_onnx(state.module, step_dir / "model_fp32.onnx", check).path
        metrics = _measure(state, artifact, data, recipe, speed)
        rec = {"name": name, "type": kind, "seconds": round(seconds, 1), "metrics": metrics, "notes": state.notes,
               "files": folder_sha256(step_dir, skip=("done.json",))}
        atomic_write_json(step_dir / "done.json", rec)
        records.append(rec)
        ddp.barrier()
    if not main:
        shutil.rmtree(scratch, ignore_errors=True)
        return {}
    return _finish(out, recipe, loaded, data, baseline, records)


def newly_missed(baseline: dict[str, Any], final: dict[str, Any], test, data: Data, groups: np.ndarray | None = None,
                 limit: int = 48) -> list[dict[str, Any]]:
    """Safety-critical test images the baseline got right and the final model gets wrong (the first
    ``limit``, grouped by physical sign when ``groups`` are known: frames of one sign side by side), with true
    and predicted class names and, when measured, the baseline's probability of the true class: the evidence
    behind a per-class verdict (a loss the baseline itself won at p 0.3 is a different finding from one it
    was sure of; nine frames of one sign are one sign)."""
    if "predictions" not in baseline or "predictions" not in final:
        return []
    b, f, y = np.asarray(baseline["predictions"]), np.asarray(final["predictions"]), test.y
    idx = np.flatnonzero((b == y) & (f != y) & np.isin(y, sorted(data.safety_critical)))
    if groups is not None:
        idx = idx[np.lexsort((idx, groups[idx], y[idx]))]
    idx = idx[:limit]
    names, p = data.class_names, baseline.get("true_class_probability")
    return [{"index": int(i), "true": names[y[i]], "predicted": names[f[i]]}
            | ({"sign": int(groups[i])} if groups is not None else {})
            | ({"baseline_probability": p[i]} if p is not None else {}) for i in idx]


def missed_caption(m: dict[str, Any]) -> str:
    """A thumbnail's caption: true → predicted, the physical sign, and the baseline's true-class probability."""
    extra = ([f"sign {m['sign']}"] if "sign" in m else []) + (
        [f"(baseline p {m['baseline_probability']:.2f})"] if "baseline_probability" in m else [])
    return f"{m['true']} → {m['predicted']}" + ("\n" + " ".join(extra) if extra else "")


def _finish(out: Path, recipe: Recipe, loaded: LoadedModel, data: Data, baseline: dict[str, Any],
            records: list[dict[str, Any]]) -> dict[str, Any]:
    final = records[-1]["metrics"] if records else baseline
    test = data.test.head(recipe.evaluation.test_subset, seed=recipe.seed)
    groups, groups_how = data.test_groups(test)
    gate = check_gate(baseline, final, recipe.budgets, sorted(data.safety_critical), data.class_names, test.y,
                      noise_trials=NOISE_TRIALS, groups=groups, groups_how=groups_how)
    last_dir = out / "steps" / f"{len(records) - 1:02d}-{records[-1]['type']}"
    artifact = last_dir / final["artifact"]
    target = out / ("model.onnx" if gate["passed"] else "model.rejected.onnx")
    for stale in (out / "model.onnx", out / "model.rejected.onnx"):
        if stale.exists() and stale != target:
            stale.unlink()
    shutil.copyfile(artifact, target)
    final = {**final, "artifact": target.name}
    # The ratios the targets judge come from one interleaved measurement of the two files, not from figures
    # taken minutes apart (measured here: a shared 2-core VM drifts by +-25% between such measurements).
    sbs = side_by_side({"baseline": out / "baseline.onnx", "final": target}, data.input_shape,
                       runs=recipe.evaluation.latency_runs, throughput_seconds=recipe.evaluation.throughput_seconds)
    stability = ratio_stability(sbs)
    verdict = speed_verdict(baseline | sbs["baseline"], final | sbs["final"], "the final model")
    if not stability["quiet"]:
        verdict += (f" (NOT a quiet measurement: the per-round ratios {stability['round_ratios']} spread "
                    f"{100 * stability['spread']:.0f}%; re-measure with nothing else running, e.g. "
                    "`drivecompress bench`)")
    missed = newly_missed(baseline, final, test, data, groups)
    if missed:
        from drivecompress.data.gtsrb import sign_extent
        from drivecompress.report.plots import thumbnails

        shown = test.x[[m["index"] for m in missed]]
        h, w = sign_extent(shown)
        crops = [im[: max(int(a), 4), : max(int(c), 4)] for im, a, c in zip(shown, h, w, strict=True)]
        png = thumbnails(crops, [missed_caption(m) for m in missed])
        atomic_write_text(out / "missed_safety.png.b64", png)
    report = {
        "baseline": baseline,
        "steps": [{k: r[k] for k in ("name", "type", "seconds", "metrics")} | {"notes": r.get("notes", {})}
                  for r in records],
        "final": final,
        "gate": gate,
        "newly_missed_safety": missed,
        "targets": check_targets(baseline | sbs["baseline"], final | sbs["final"], recipe.targets),
        "ratios": ratios(baseline | sbs["baseline"], final | sbs["final"]),
        "side_by_side_latency": sbs,
        "side_by_side_stability": stability,
        "speed_verdict": verdict,
        "model": str(loaded.source),
        "artifact": target.name,
        "classes": {"names": list(data.class_names), "safety_critical": sorted(data.safety_critical)},
        "data": data.source,
        "recipe": recipe.resolved(),
        "machine": machine_info(),
        "checksums": {"baseline.onnx": file_sha256(out / "baseline.onnx"), target.name: file_sha256(target),
                      **{f"steps/{i:02d}-{r['type']}/{k}": v for i, r in enumerate(records)
                         for k, v in r.get("files", {}).items()}},
    }
    atomic_write_json(out / "report.json", report)
    from drivecompress.report.html import write_html

    write_html(report, out / "report.html")
    if not gate["passed"]:
        raise GateRefusedError(f"{out / 'report.json'}: " + "; ".join(gate["violations"]), report)
    return report

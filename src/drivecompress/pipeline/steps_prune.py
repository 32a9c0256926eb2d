"""Pruning steps: structured (iterative, fine-tuned between steps, recovery at the end) and unstructured
(gradual magnitude sparsity with fine-tuning, masks made permanent)."""

from __future__ import annotations

import dataclasses

from pydantic import Field

from drivecompress.evaluate.complexity import count_macs
from drivecompress.pipeline.registry import Context, State, register_step
from drivecompress.pipeline.tuning import Tuning, tune
from drivecompress.prune.importance import ImportanceName
from drivecompress.prune.sensitivity import measure_sensitivity, plot_sensitivity, ratios_for_mac_budget
from drivecompress.prune.structured import StructuredConfig, make_pruner, prune_step
from drivecompress.prune.unstructured import (
    UnstructuredConfig,
    apply_sparsity,
    conv_sparsity,
    gradual_schedule,
    layer_sparsity,
    make_permanent,
)
from drivecompress.train.loop import evaluate_accuracy


class PruneStep(Tuning):
    """Structured channel pruning with physical removal (Torch-Pruning)."""

    finetune_epochs: int = Field(1, ge=0, description="epochs of fine-tuning after each pruning step")
    recovery_epochs: int = Field(2, ge=0, description="fine-tuning after the last step")
    ratio: float = Field(0.5, gt=0, lt=1, description="fraction of channels removed per group (or globally)")
    importance: ImportanceName = "l2"
    global_pruning: bool = False
    max_layer_ratio: float = Field(0.9, gt=0, le=1)
    round_to: int | None = Field(16, ge=1, description="keep channel counts multiples of this (see StructuredConfig)")
    never_prune: list[str] = Field(default_factory=lambda: ["classifier"])
    iterations: int = Field(1, ge=1)
    target_macs_fraction: float | None = Field(
        None, gt=0, lt=1, description="per-layer ratios from a sensitivity analysis to reach this MAC fraction")
    sensitivity_images: int = Field(1000, ge=1)


def _sensitivity_plan(state: State, cfg: PruneStep, sc: StructuredConfig, ctx: Context) -> tuple[dict, dict]:
    val = ctx.splits.val.head(cfg.sensitivity_images, seed=ctx.seed)
    sens = measure_sensitivity(state.module, val, sc, device=ctx.device)
    plot_sensitivity(sens, ctx.step_dir / "sensitivity.png")
    plan, macs = ratios_for_mac_budget(state.module, sens, sc, cfg.target_macs_fraction)
    return plan, {"sensitivity": dataclasses.asdict(sens), "plan": plan, "planned_macs": macs,
                  "plot": "sensitivity.png"}


@register_step("prune", PruneStep)
def prune(state: State, cfg: PruneStep, ctx: Context) -> State:
    sc = StructuredConfig(ratio=cfg.ratio, importance=cfg.importance, global_pruning=cfg.global_pruning,
                          max_layer_ratio=cfg.max_layer_ratio, round_to=cfg.round_to,
                          never_prune=tuple(cfg.never_prune))
    plan, extra = (None, {})
    if cfg.target_macs_fraction is not None:
        plan, extra = _sensitivity_plan(state, cfg, sc, ctx)
    pruner = make_pruner(state.module, sc, steps=cfg.iterations, per_layer=plan)
    calib = ctx.splits.train.head(256, seed=ctx.seed)
    history = []
    for k in range(cfg.iterations):
        prune_step(state.module, pruner, sc, calib)
        rec = {"iteration": k + 1, "macs": count_macs(state.module),
               "val_accuracy_after_prune": evaluate_accuracy(state.module, ctx.splits.val, ctx.device)}
        if k < cfg.iterations - 1:
            tune(state, cfg, ctx, cfg.finetune_epochs, f"prune {k + 1}/{cfg.iterations} fine-tune")
            rec["val_accuracy_after_finetune"] = evaluate_accuracy(state.module, ctx.splits.val, ctx.device)
        history.append(rec)
    tune(state, cfg, ctx, cfg.recovery_epochs, "prune recovery")
    history.append({"recovery": True, "val_accuracy": evaluate_accuracy(state.module, ctx.splits.val, ctx.device)})
    return dataclasses.replace(state, notes={"history": history, **extra})


class UnstructuredStep(Tuning):
    """Gradual global (or per-layer) magnitude pruning to ``sparsity``; masks made permanent."""

    finetune_epochs: int = Field(1, ge=0, description="epochs of fine-tuning after each pruning step")
    recovery_epochs: int = Field(2, ge=0, description="fine-tuning after the last step")
    sparsity: float = Field(0.8, gt=0, lt=1)
    global_pruning: bool = True
    include_linear: bool = False
    iterations: int = Field(3, ge=1)


@register_step("unstructured", UnstructuredStep)
def unstructured(state: State, cfg: UnstructuredStep, ctx: Context) -> State:
    uc = UnstructuredConfig(sparsity=cfg.sparsity, global_pruning=cfg.global_pruning,
                            include_linear=cfg.include_linear)
    history = []
    for k, target in enumerate(gradual_schedule(cfg.sparsity, cfg.iterations)):
        apply_sparsity(state.module, target, uc)
        epochs = cfg.finetune_epochs if k < cfg.iterations - 1 else cfg.recovery_epochs
        tune(state, cfg, ctx, epochs, f"sparsity {target:.2f}")
        history.append({"target": target, "val_accuracy": evaluate_accuracy(state.module, ctx.splits.val, ctx.device)})
    make_permanent(state.module)
    notes = {"history": history, "conv_sparsity": conv_sparsity(state.module),
             "layer_sparsity": layer_sparsity(state.module)}
    return dataclasses.replace(state, notes=notes)

"""Iterative structured pruning, the algorithm the recipe step, the API and the benchmarks share: prune in
``iterations`` steps with (distilled) fine-tuning between them and a recovery fine-tune at the end; refuse
early when the graph or the criterion cannot reach the asked ratio."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from drivecompress.core import Context, State, register_step
from drivecompress.data.api import Data
from drivecompress.evaluate.complexity import count_macs
from drivecompress.prune.sensitivity import sensitivity_plan
from drivecompress.prune.structured import (
    PruneConfig,
    check_reached,
    make_pruner,
    output_layers,
    prunable_channels,
    prune_step,
)
from drivecompress.train.finetune import finetune
from drivecompress.train.loop import evaluate_accuracy


def prune(model: nn.Module, data: Data, cfg: PruneConfig | None = None, *, teacher: nn.Module | None = None,
          device: torch.device | str | None = None, seed: int = 0, workdir: Path | None = None) -> dict[str, Any]:
    """Prune ``model`` in place with ``cfg.iterations`` steps, fine-tuning between them and recovering at the
    end (distilled from ``teacher`` when ``cfg.distill``). Returns the notes: per-iteration MACs and accuracy,
    the share of channels removed, and the sensitivity plan when one was made."""
    cfg = cfg or PruneConfig()
    example = data.example_input()
    plan, extra = None, {}
    if cfg.target_macs_fraction is not None:
        plan, extra = sensitivity_plan(model, data, cfg, seed, workdir)
    ignored = set(cfg.never_prune) | set(output_layers(model, example))
    before = prunable_channels(model, ignored)
    pruner = make_pruner(model, cfg, example, steps=cfg.iterations, per_layer=plan)
    calib = data.train.head(256, seed=seed)
    history = []
    for k in range(cfg.iterations):
        prune_step(model, pruner, cfg, calib)
        if k == 0:  # refuse before any fine-tuning is spent on a model that could not be pruned
            check_reached(before, prunable_channels(model, ignored),
                          cfg.model_copy(update={"ratio": cfg.ratio / cfg.iterations}), pruner)
        rec = {"iteration": k + 1, "macs": count_macs(model, data.input_shape),
               "val_accuracy_after_prune": evaluate_accuracy(model, data.val, "cpu")}
        if k < cfg.iterations - 1:
            finetune(model, data, cfg, cfg.finetune_epochs, teacher=teacher, device=device, seed=seed,
                     label=f"prune {k + 1}/{cfg.iterations} fine-tune")
            rec["val_accuracy_after_finetune"] = evaluate_accuracy(model, data.val, "cpu")
        history.append(rec)
    removed = check_reached(before, prunable_channels(model, ignored), cfg, pruner)
    finetune(model, data, cfg, cfg.recovery_epochs, teacher=teacher, device=device, seed=seed, label="prune recovery",
             average=True)
    history.append({"recovery": True, "val_accuracy": evaluate_accuracy(model, data.val, "cpu")})
    return {"history": history, "channels_removed": removed, "never_pruned": sorted(ignored), **extra}


@register_step("prune", PruneConfig)
def _prune_step(state: State, cfg: PruneConfig, ctx: Context) -> State:
    notes = prune(state.module, ctx.data, cfg, teacher=ctx.teacher, device=ctx.device, seed=ctx.seed,
                  workdir=ctx.step_dir)
    return dataclasses.replace(state, notes=notes)

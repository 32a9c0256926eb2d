"""Unstructured magnitude pruning: zero the smallest weights (global or per layer) with a gradual schedule,
then make the masks permanent. Honest about what it buys: the zeros compress on disk (measured with zip),
but a dense runtime multiplies by zero just as fast as by anything else — latency is measured, not assumed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune
from pydantic import Field, model_validator

from drivecompress.core import Context, State, register_step
from drivecompress.data.api import Data
from drivecompress.train.finetune import TuningConfig, finetune
from drivecompress.train.loop import evaluate_accuracy


class UnstructuredConfig(TuningConfig):
    """Gradual global (or per-layer) magnitude pruning to ``sparsity`` over ``iterations`` steps, fine-tuned
    between them (distilled from the input model by default); masks made permanent."""

    sparsity: float = Field(0.8, gt=0, lt=1)
    global_pruning: bool = True
    scores: Literal["magnitude", "layer_normalized"] = Field(
        "magnitude", description="global ranking by |w|, or by |w| / RMS of its layer (Deep Compression's "
        "per-layer threshold q * std; measured one-shot on the baseline at 60%: 90.3% vs 97.0% for |w|)")
    max_layer_sparsity: float = Field(1.0, gt=0, le=1, description="global pruning never empties a layer beyond "
                                      "this (measured: plain |w| at 92% left the widest layers 99% zeros)")
    include_linear: bool = False
    iterations: int = Field(3, ge=1)
    finetune_epochs: int = Field(1, ge=0, description="epochs of fine-tuning after each pruning step")
    recovery_epochs: int = Field(2, ge=0, description="fine-tuning after the last step")

    @model_validator(mode="after")
    def _check(self) -> UnstructuredConfig:
        self.check_swa(self.recovery_epochs, "recovery_epochs")
        return self


def prunable_weights(model: nn.Module, include_linear: bool = False) -> list[tuple[nn.Module, str]]:
    kinds = (nn.modules.conv._ConvNd, nn.Linear) if include_linear else (nn.modules.conv._ConvNd,)
    return [(m, "weight") for m in model.modules() if isinstance(m, kinds)]


def apply_sparsity(model: nn.Module, sparsity: float, cfg: UnstructuredConfig) -> None:
    """Mask the smallest-magnitude weights so that ``sparsity`` of the prunable weights are zero.

    Called repeatedly with growing sparsity for a gradual schedule; existing masks are folded in first so the
    target is always measured against all weights. Counts are rounded up (torch rounds to nearest, which left
    a measured 80% run one weight short: 79.99994%).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    params = prunable_weights(model, cfg.include_linear)
    make_permanent(model)
    if cfg.global_pruning and cfg.max_layer_sparsity < 1.0 and cfg.scores == "magnitude":
        for (m, name), k in zip(params, capped_counts([getattr(m, n).detach() for m, n in params], sparsity,
                                                      cfg.max_layer_sparsity), strict=True):
            tprune.l1_unstructured(m, name, amount=k)
    elif cfg.global_pruning:
        total = sum(getattr(m, name).numel() for m, name in params)
        scores = None
        if cfg.scores == "layer_normalized":
            scores = {(m, name): getattr(m, name).detach().abs() / getattr(m, name).detach().pow(2).mean().sqrt()
                      .clamp(min=1e-12) for m, name in params}
        tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=math.ceil(sparsity * total),
                                   importance_scores=scores)
    else:
        for m, name in params:
            tprune.l1_unstructured(m, name, amount=math.ceil(sparsity * getattr(m, name).numel()))


def capped_counts(weights: list[torch.Tensor], sparsity: float, cap: float) -> list[int]:
    """How many weights to prune per layer so that ``sparsity`` of all are pruned by one global magnitude
    threshold, except that no layer loses more than ``cap`` of its weights (their share goes to the others)."""
    sizes = [w.numel() for w in weights]
    target = math.ceil(sparsity * sum(sizes))
    capped: set[int] = set()
    while True:
        rest = target - sum(math.floor(cap * sizes[i]) for i in capped)
        free = [i for i in range(len(weights)) if i not in capped]
        mags = torch.cat([weights[i].abs().flatten() for i in free])
        if rest <= 0 or not len(mags):
            counts = {i: 0 for i in free}
        elif rest >= len(mags):
            counts = {i: sizes[i] for i in free}
        else:
            t = torch.kthvalue(mags, rest).values
            counts = {i: int((weights[i].abs() <= t).sum()) for i in free}
        over = {i for i in free if counts[i] > math.floor(cap * sizes[i])}
        if not over:
            break
        capped |= over
    out = [math.floor(cap * sizes[i]) if i in capped else counts[i] for i in range(len(weights))]
    return out


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold masks into the weights (removes the reparametrisation, keeps the zeros)."""
    for m in model.modules():
        if tprune.is_pruned(m) and hasattr(m, "weight_mask"):
            tprune.remove(m, "weight")
    return model


def gradual_schedule(target: float, steps: int) -> list[float]:
    """Cubic sparsity ramp (Zhu & Gupta, 2017): prune fast while there is redundancy, gently near the end."""
    return [target * (1 - (1 - (i + 1) / steps) ** 3) for i in range(steps)]


@torch.no_grad()
def layer_sparsity(model: nn.Module, include_linear: bool = True) -> dict[str, float]:
    """Real fraction of exact zeros in each conv (and linear) weight."""
    kinds = (nn.Conv2d, nn.Linear) if include_linear else (nn.Conv2d,)
    return {n: float((m.weight == 0).float().mean()) for n, m in model.named_modules() if isinstance(m, kinds)}


@torch.no_grad()
def conv_sparsity(model: nn.Module) -> float:
    """Fraction of zero weights over all convolutions together."""
    zeros = total = 0
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            zeros += int((m.weight == 0).sum())
            total += m.weight.numel()
    return zeros / max(1, total)


def sparsify(model: nn.Module, data: Data, cfg: UnstructuredConfig | None = None, *,
             teacher: nn.Module | None = None, device: torch.device | str | None = None,
             seed: int = 0) -> dict[str, Any]:
    """Zero ``cfg.sparsity`` of the weights of ``model`` in place, gradually, with fine-tuning; returns notes
    with the sparsity really reached per layer and the validation accuracy after each step."""
    cfg = cfg or UnstructuredConfig()
    if not prunable_weights(model, cfg.include_linear):
        raise ValueError(f"{type(model).__name__} has no convolution weights to sparsify "
                         "(set include_linear: true for linear layers)")
    history = []
    for k, target in enumerate(gradual_schedule(cfg.sparsity, cfg.iterations)):
        apply_sparsity(model, target, cfg)
        epochs = cfg.finetune_epochs if k < cfg.iterations - 1 else cfg.recovery_epochs
        finetune(model, data, cfg, epochs, teacher=teacher, device=device, seed=seed, label=f"sparsity {target:.2f}",
                 average=k == cfg.iterations - 1)
        history.append({"target": target, "val_accuracy": evaluate_accuracy(model, data.val, "cpu")})
    make_permanent(model)
    return {"history": history, "conv_sparsity": conv_sparsity(model), "layer_sparsity": layer_sparsity(model)}


@register_step("unstructured", UnstructuredConfig)
def _unstructured_step(state: State, cfg: UnstructuredConfig, ctx: Context) -> State:
    notes = sparsify(state.module, ctx.data, cfg, teacher=ctx.teacher, device=ctx.device, seed=ctx.seed)
    return dataclasses.replace(state, notes=notes)

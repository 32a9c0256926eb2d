"""Pruning sensitivity: prune each layer alone at several ratios, measure validation accuracy, plot the curves,
and turn them into per-layer ratios that meet a MAC budget at the least estimated accuracy cost."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch_pruning as tp

from drivecompress.data.api import Data
from drivecompress.data.dataset import LabeledImages
from drivecompress.evaluate.complexity import count_macs
from drivecompress.prune.importance import make_importance
from drivecompress.prune.structured import PruneConfig, _ignored
from drivecompress.train.loop import evaluate_accuracy


@dataclass
class PruneSensitivity:
    base_accuracy: float
    ratios: list[float]
    curves: dict[str, list[float]] = field(default_factory=dict)
    """layer name -> validation accuracy after pruning that layer alone at each ratio"""


def _shapes(model: nn.Module) -> tuple:
    """Every parameter's shape: two pruned copies with equal shapes lost the same channels' worth."""
    return tuple(tuple(p.shape) for p in model.parameters())


def prunable_layers(model: nn.Module, cfg: PruneConfig, example: torch.Tensor) -> list[str]:
    """Convolutions that can be pruned as a group root (depthwise convs follow their producer's group)."""
    ignored = set(map(id, _ignored(model, cfg.never_prune, example)))
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and id(m) not in ignored and m.groups == 1]


def _pruned_copy(model: nn.Module, per_layer: dict[str, float], cfg: PruneConfig, example: torch.Tensor) -> nn.Module:
    m = copy.deepcopy(model).cpu().eval()
    mods = dict(m.named_modules())
    ratio_dict = {mods[n]: r for n, r in per_layer.items() if r > 0}
    if ratio_dict:
        pruner = tp.pruner.MetaPruner(m, example, importance=make_importance(cfg.importance),
                                      pruning_ratio=0.0, pruning_ratio_dict=ratio_dict,
                                      ignored_layers=_ignored(m, cfg.never_prune, example), round_to=cfg.round_to)
        pruner.step()
    return m


def measure_sensitivity(model: nn.Module, val: LabeledImages, cfg: PruneConfig, example: torch.Tensor,
                        ratios: tuple[float, ...] = (0.25, 0.5, 0.75), device: str = "cpu") -> PruneSensitivity:
    """Accuracy of ``model`` with each prunable layer pruned alone at each ratio (importance = cfg's)."""
    rep = PruneSensitivity(base_accuracy=evaluate_accuracy(model, val, device), ratios=list(ratios))
    seen: list[tuple] = [_shapes(model)]
    for name in prunable_layers(model, cfg, example):
        copies = [_pruned_copy(model, {name: r}, cfg, example) for r in ratios]
        spec = _shapes(copies[-1])
        if spec in seen:  # unprunable here, or coupled with a layer already measured (same group): skip
            continue
        seen.append(spec)
        rep.curves[name] = [evaluate_accuracy(m, val, device) for m in copies]
    return rep


def ratios_for_mac_budget(model: nn.Module, sens: PruneSensitivity, cfg: PruneConfig, example: torch.Tensor,
                          macs_fraction: float) -> tuple[dict[str, float], int]:
    """Greedy: raise, one ratio step at a time, the layer whose next step costs the least accuracy per MAC
    saved, until the estimated MACs reach ``macs_fraction`` of the original. Savings are measured per layer
    alone (nearly additive); the combined plan is then measured for real and tightened if it falls short.
    Returns the per-layer ratios and the resulting MACs."""
    shape = tuple(example.shape[1:])
    base_macs = count_macs(model, shape)
    levels = [0.0, *sens.ratios]
    acc = {n: [sens.base_accuracy, *c] for n, c in sens.curves.items()}
    saved = {n: [0] + [base_macs - count_macs(_pruned_copy(model, {n: r}, cfg, example), shape) for r in sens.ratios]
             for n in sens.curves}
    goal = macs_fraction
    for _ in range(6):
        state = dict.fromkeys(sens.curves, 0)
        est = base_macs
        while est > goal * base_macs:
            options = [(max(0.0, acc[n][v] - acc[n][v + 1]) / max(1, saved[n][v + 1] - saved[n][v]), n)
                       for n, v in state.items() if v + 1 < len(levels) and saved[n][v + 1] > saved[n][v]]
            if not options:
                break
            _, n = min(options)
            est -= saved[n][state[n] + 1] - saved[n][state[n]]
            state[n] += 1
        plan = {n: levels[v] for n, v in state.items() if v > 0}
        macs = count_macs(_pruned_copy(model, plan, cfg, example), shape)
        if macs <= macs_fraction * base_macs:
            break
        goal *= macs_fraction * base_macs / macs  # interactions saved less than estimated: aim lower
    return plan, macs


def plot_sensitivity(sens: PruneSensitivity, path) -> None:
    """One curve per layer: validation accuracy against the ratio of its channels removed (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in sens.curves.items():
        ax.plot([0.0, *sens.ratios], [100 * sens.base_accuracy, *(100 * a for a in curve)], marker="o", ms=3,
                label=name)
    ax.set_xlabel("fraction of the layer's channels removed")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def sensitivity_plan(model: nn.Module, data: Data, cfg: PruneConfig, seed: int = 0,
                     workdir: Path | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Per-layer ratios reaching ``cfg.target_macs_fraction`` and the notes (curves, plot) behind them."""
    example = data.example_input()
    sens = measure_sensitivity(model, data.val.head(cfg.sensitivity_images, seed=seed), cfg, example)
    notes: dict[str, Any] = {"sensitivity": dataclasses.asdict(sens)}
    if workdir is not None:
        plot_sensitivity(sens, Path(workdir) / "sensitivity.png")
        notes["plot"] = "sensitivity.png"
    plan, macs = ratios_for_mac_budget(model, sens, cfg, example, cfg.target_macs_fraction)
    return plan, {**notes, "plan": plan, "planned_macs": macs}

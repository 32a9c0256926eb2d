"""Structured (channel) pruning with physical removal, on Torch-Pruning's dependency graph so that coupled
channels — residual additions, concatenations, depthwise groups, squeeze-and-excitation gates — are removed
together and the network really shrinks. Works on any ``nn.Module`` that Torch-Pruning can trace; the layer
that produces the model's output (the classifier) is found from the graph and never pruned.

The iterative algorithm (prune, fine-tune, recover) that the recipe step, the API and the benchmarks share
is ``prune/iterative.py``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp
from pydantic import Field, model_validator

from drivecompress.data.dataset import LabeledImages
from drivecompress.prune.importance import ImportanceName, accumulate_gradients, make_importance
from drivecompress.train.finetune import TuningConfig


class PruneConfig(TuningConfig):
    """What to remove and how to recover. ``ratio`` is the fraction of channels removed from each prunable
    group (uniform) or overall (``global_pruning``); MACs fall roughly quadratically.

    ``round_to`` 16 by default: ONNX Runtime's x86 convolutions work on blocks of 8 (AVX2) or 16 (AVX-512)
    channels, so other widths are padded and the saved MACs are not saved time. Measured here (AVX-512,
    benchmarks/bench_prune.py): the ResNet pruned to 16/48/96 channels runs 2.4x faster than the baseline,
    to 20/44/88 (round_to 4, about the same MACs) only 1.4x."""

    ratio: float = Field(0.5, gt=0, lt=1, description="fraction of channels removed per group (or globally)")
    importance: ImportanceName = "l2"
    global_pruning: bool = False
    max_layer_ratio: float = Field(0.9, gt=0, le=1)
    round_to: int | None = Field(16, ge=1, description="keep channel counts multiples of this")
    never_prune: list[str] = Field(default_factory=list,
                                   description="module names kept whole (the output layer always is)")
    iterations: int = Field(1, ge=1)
    finetune_epochs: int = Field(1, ge=0, description="epochs of fine-tuning after each pruning step")
    recovery_epochs: int = Field(2, ge=0, description="fine-tuning after the last step")
    target_macs_fraction: float | None = Field(
        None, gt=0, lt=1, description="per-layer ratios from a sensitivity analysis to reach this MAC fraction")
    sensitivity_images: int = Field(1000, ge=1)
    min_ratio_reached: float = Field(0.5, gt=0, le=1, description=(
        "refuse when fewer than this share of the asked channel ratio could be removed"))

    @model_validator(mode="after")
    def _check(self) -> PruneConfig:
        self.check_swa(self.recovery_epochs, "recovery_epochs")
        return self


@torch.no_grad()
def output_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The layers whose output is the model's output (the classifier): found by running the model, not by
    name. They must keep their outputs (one per class)."""
    order: list[tuple[str, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: order.append((n, o)))
             for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)]
    try:
        out = model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    width = out.shape[1]
    return [n for n, o in order[-1:] if o.shape[1] == width]


def _ignored(model: nn.Module, names: list[str], example: torch.Tensor) -> list[nn.Module]:
    mods = dict(model.named_modules())
    missing = [n for n in names if n not in mods]
    if missing:
        raise ValueError(f"never_prune: no module named {missing} (e.g. {list(mods)[1:5]})")
    return [mods[n] for n in dict.fromkeys([*names, *output_layers(model, example)])]


def make_pruner(model: nn.Module, cfg: PruneConfig, example: torch.Tensor, steps: int = 1,
                per_layer: dict[str, float] | None = None) -> tp.pruner.MetaPruner:
    """A Torch-Pruning pruner that reaches ``cfg.ratio`` (or the ``per_layer`` ratios, by module name, e.g.
    from the sensitivity analysis) after ``steps`` calls of ``step()``."""
    mods = dict(model.named_modules())
    ratio_dict = {mods[n]: r for n, r in (per_layer or {}).items()} or None
    try:
        return tp.pruner.MetaPruner(
            model.cpu().eval(), example, importance=make_importance(cfg.importance),
            global_pruning=cfg.global_pruning, pruning_ratio=0.0 if ratio_dict else cfg.ratio,
            pruning_ratio_dict=ratio_dict, max_pruning_ratio=cfg.max_layer_ratio, iterative_steps=steps,
            ignored_layers=_ignored(model, cfg.never_prune, example), round_to=cfg.round_to)
    except (RuntimeError, TypeError, KeyError, AttributeError) as exc:  # the graph could not be traced
        raise ValueError(f"Torch-Pruning could not build the dependency graph of {type(model).__name__}: "
                         f"{str(exc).splitlines()[0][:200]}") from exc


def unscored_groups(pruner: tp.pruner.MetaPruner) -> tuple[int, int]:
    """(groups the importance cannot score, all prunable groups): a criterion that scores none prunes none."""
    groups = list(pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                           root_module_types=pruner.root_module_types))
    return sum(pruner.importance(g) is None for g in groups), len(groups)


def prunable_channels(model: nn.Module, ignored: set[str]) -> int:
    """Output channels of every conv/linear that may be pruned (what the ratio is measured against)."""
    return sum(m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features
               for n, m in model.named_modules()
               if isinstance(m, nn.Linear | nn.modules.conv._ConvNd) and n not in ignored)


def prune_step(model: nn.Module, pruner: tp.pruner.MetaPruner, cfg: PruneConfig,
               data: LabeledImages | None = None) -> nn.Module:
    """One pruning step in place (gradients first for Taylor importance)."""
    if cfg.importance == "taylor":
        if data is None:
            raise ValueError("taylor importance needs data to compute gradients")
        accumulate_gradients(model, data)
    pruner.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def prune_structured(model: nn.Module, cfg: PruneConfig, example: torch.Tensor,
                     data: LabeledImages | None = None) -> nn.Module:
    """One-shot structured pruning of ``model`` in place (no fine-tuning); returns it."""
    return prune_step(model, make_pruner(model, cfg, example), cfg, data)


def check_reached(before: int, after: int, cfg: PruneConfig, pruner: tp.pruner.MetaPruner) -> float:
    """The share of channels removed; refuses (ValueError with the reason) when far below the asked ratio,
    so a criterion or graph that cannot prune never passes silently."""
    got = 1.0 - after / max(1, before)
    asked = cfg.ratio if cfg.target_macs_fraction is None else 0.0
    if got < cfg.min_ratio_reached * asked or (cfg.target_macs_fraction is None and got <= 0.0):
        bad, total = unscored_groups(pruner)
        why = (f"importance '{cfg.importance}' could score only {total - bad} of {total} channel groups"
               if bad else f"{total} prunable channel groups; max_layer_ratio {cfg.max_layer_ratio}, "
               f"round_to {cfg.round_to} and never_prune limit what can go")
        raise ValueError(f"structured pruning removed {100 * got:.1f}% of the prunable channels, asked "
                         f"{100 * asked:.0f}%: {why}")
    return got


@torch.no_grad()
def channel_widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv, for reports."""
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}

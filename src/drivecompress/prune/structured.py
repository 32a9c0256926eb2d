"""Structured (channel) pruning with physical removal, on Torch-Pruning's dependency graph so that coupled
channels — residual additions, depthwise groups — are removed together and the network really shrinks.

The pruned model is still one of our registered families: its ``spec()`` reads the new widths from the
live layers, so it saves as safetensors + JSON and reloads without pickle.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch_pruning as tp

from drivecompress.data.dataset import LabeledImages
from drivecompress.prune.importance import ImportanceName, accumulate_gradients, example_input, make_importance


@dataclass(frozen=True)
class StructuredConfig:
    """What to remove. ``ratio`` is the fraction of channels removed from each prunable group (uniform) or
    overall (``global_pruning``); Torch-Pruning counts it per channel, so MACs fall roughly quadratically.

    ``round_to`` 16 by default: ONNX Runtime's x86 convolutions work on blocks of 8 (AVX2) or 16 (AVX-512)
    channels, so other widths are padded and the saved MACs are not saved time. Measured here (AVX-512,
    benchmarks/bench_prune.py): the ResNet pruned to 16/48/96 channels runs 2.4x faster than the baseline,
    to 20/44/88 (round_to 4, about the same MACs) only 1.4x."""

    ratio: float = 0.5
    importance: ImportanceName = "l2"
    global_pruning: bool = False
    max_layer_ratio: float = 0.9
    round_to: int | None = 16
    never_prune: tuple[str, ...] = ("classifier",)


def _ignored(model: nn.Module, names: tuple[str, ...]) -> list[nn.Module]:
    mods = dict(model.named_modules())
    missing = [n for n in names if n not in mods]
    if missing:
        raise ValueError(f"never_prune: no module named {missing} (e.g. {list(mods)[1:5]})")
    return [mods[n] for n in names]


def make_pruner(model: nn.Module, cfg: StructuredConfig, steps: int = 1,
                per_layer: dict[str, float] | None = None) -> tp.pruner.MetaPruner:
    """A Torch-Pruning pruner that reaches ``cfg.ratio`` (or the ``per_layer`` ratios, by module name, e.g.
    from the sensitivity analysis) after ``steps`` calls of ``step()``."""
    if not 0.0 < cfg.ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {cfg.ratio}")
    mods = dict(model.named_modules())
    ratio_dict = {mods[n]: r for n, r in (per_layer or {}).items()} or None
    return tp.pruner.MetaPruner(
        model.cpu().eval(),
        example_input(),
        importance=make_importance(cfg.importance),
        global_pruning=cfg.global_pruning,
        pruning_ratio=0.0 if ratio_dict else cfg.ratio,
        pruning_ratio_dict=ratio_dict,
        max_pruning_ratio=cfg.max_layer_ratio,
        iterative_steps=steps,
        ignored_layers=_ignored(model, cfg.never_prune),
        round_to=cfg.round_to,
    )


def prune_step(model: nn.Module, pruner: tp.pruner.MetaPruner, cfg: StructuredConfig,
               data: LabeledImages | None = None) -> nn.Module:
    """One pruning step in place (gradients first for Taylor importance)."""
    if cfg.importance == "taylor":
        if data is None:
            raise ValueError("taylor importance needs data to compute gradients")
        accumulate_gradients(model, data)
    pruner.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def prune_structured(model: nn.Module, cfg: StructuredConfig, data: LabeledImages | None = None) -> nn.Module:
    """One-shot structured pruning of ``model`` in place; returns it."""
    return prune_step(model, make_pruner(model, cfg), cfg, data)


@torch.no_grad()
def channel_widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv, for reports."""
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}

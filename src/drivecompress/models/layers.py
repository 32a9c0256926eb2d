"""Building blocks shared by the families."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn


class InputNorm(nn.Module):
    """Normalization inside the graph, so the deploy model takes raw RGB in [0, 1] (DESIGN.md contract).

    ``per_image=True`` standardizes each image by its own mean/std first: many GTSRB images are nearly
    black, and per-image contrast normalization makes them look like the rest. Dataset mean/std (from the
    training split) are then applied.
    """

    def __init__(self, mean: list[float], std: list[float], per_image: bool = True) -> None:
        super().__init__()
        self.per_image = per_image
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_image:
            m = x.mean(dim=(1, 2, 3), keepdim=True)
            v = (x - m).pow(2).mean(dim=(1, 2, 3), keepdim=True)
            return (x - m) / torch.sqrt(v + 1e-4)
        return (x - self.mean) / self.std

    def spec(self) -> dict[str, Any]:
        return {
            "mean": [round(float(v), 6) for v in self.mean.flatten()],
            "std": [round(float(v), 6) for v in self.std.flatten()],
            "per_image": self.per_image,
        }


DEFAULT_NORM: dict[str, Any] = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "per_image": True}


def input_norm(spec: dict[str, Any]) -> InputNorm:
    """Build the InputNorm from a model spec's ``input_norm`` entry (defaults when absent)."""
    cfg = {**DEFAULT_NORM, **spec.get("input_norm", {})}
    return InputNorm(cfg["mean"], cfg["std"], bool(cfg["per_image"]))


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ ReLU): the unit every family is made of."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def conv_out(seq: nn.Sequential) -> int:
    """Output channels of a ``conv_bn`` unit (read from the live conv, so pruning is reflected)."""
    return int(seq[0].out_channels)


def conv_in(seq: nn.Sequential) -> int:
    """Input channels of a ``conv_bn`` unit (the image's channel count for a stem)."""
    return int(seq[0].in_channels)

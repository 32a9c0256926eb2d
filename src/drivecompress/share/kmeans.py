"""Weight sharing (Deep Compression, Han et al. 2016, section 3): each layer's non-zero weights are clustered
with k-means into 2^bits shared values; the weights then store a small code each and the layer a codebook.
The centroids are fine-tuned: a layer's weight is re-parametrised as ``codebook[codes]`` (zeros kept), so the
gradient of a centroid is the sum of the gradients of its weights — the paper's grouped gradient, by autograd.

Composable after unstructured pruning: the zeros are not a cluster and stay zero.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.utils.parametrize as parametrize
from pydantic import Field, model_validator

from drivecompress.data.api import Data
from drivecompress.train.finetune import TuningConfig, finetune
from drivecompress.train.loop import evaluate_accuracy


class ShareConfig(TuningConfig):
    """k-means weight sharing of every convolution and linear weight, then fine-tuning of the centroids
    (distilled from the input model by default), then the ``.dcz`` archive (``archive: true``)."""

    conv_bits: int = Field(4, ge=1, le=8, description="code bits per convolution weight (2^bits shared values)")
    linear_bits: int = Field(5, ge=1, le=8, description="code bits per linear (classifier) weight")
    layer_bits: dict[str, int] = Field(default_factory=dict,
                                       description="per-layer bits by layer-name pattern, e.g. {'stem.*': 6}")
    init: Literal["linear", "density", "random"] = Field(
        "linear", description="centroid initialisation; linear (evenly over [min, max]) was the paper's best")
    kmeans_iterations: int = Field(30, ge=0)
    index_bits: int = Field(8, ge=1, le=16, description="bits of a relative sparse index before a filler zero "
                            "(the paper's 8 for convolutions; measured at 92% zeros: 5 bits 70,324 B, 8 bits 64,677 B)")
    epochs: int = Field(1, ge=0, description="epochs of centroid fine-tuning")
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(1e-4, gt=0, description="a centroid's gradient sums thousands of weights': keep it small")
    archive: bool = Field(True, description="write the .dcz archive and continue from the model decoded from it")

    @model_validator(mode="after")
    def _check(self) -> ShareConfig:
        if self.swa_epochs:
            raise ValueError("swa_epochs is not supported by share (its fine-tune trains the centroids only)")
        return self


def shared_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers whose weights are shared: every convolution and linear layer."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd | nn.Linear)]


def layer_bits(name: str, module: nn.Module, cfg: ShareConfig) -> int:
    for pattern, bits in cfg.layer_bits.items():
        if fnmatch.fnmatchcase(name, pattern):
            return bits
    return cfg.linear_bits if isinstance(module, nn.Linear) else cfg.conv_bits


def _init_centroids(values: torch.Tensor, k: int, init: str, gen: torch.Generator) -> torch.Tensor:
    lo, hi = float(values.min()), float(values.max())
    if init == "linear" or len(values) <= k:
        return torch.linspace(lo, hi, k)
    if init == "density":  # evenly over the CDF: dense where the weights are
        q = torch.linspace(0, 1, k + 2)[1:-1]
        return torch.quantile(values[torch.randperm(len(values), generator=gen)[:100_000]], q)
    return values[torch.randperm(len(values), generator=gen)[:k]].sort().values


@torch.no_grad()
def kmeans_1d(values: torch.Tensor, k: int, init: str = "linear", iterations: int = 30,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on scalars: (centroids sorted ascending, code of each value). In one dimension the
    assignment is a search among the midpoints of the sorted centroids, so it is exact and cheap."""
    values = values.float().flatten()
    centroids = _init_centroids(values, k, init, torch.Generator().manual_seed(seed))
    for _ in range(iterations):
        centroids = centroids.sort().values
        codes = torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)
        sums = torch.zeros(k).index_add_(0, codes, values)
        counts = torch.bincount(codes, minlength=k).float()
        new = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        if torch.allclose(new, centroids):
            break
        centroids = new
    centroids = centroids.sort().values
    return centroids, torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)


class SharedWeight(nn.Module):
    """Parametrisation ``weight = codebook[codes]`` where the weight was non-zero, 0 elsewhere. Only the
    codebook is trained; the original weight is ignored (and frozen)."""

    def __init__(self, weight: torch.Tensor, bits: int, init: str, iterations: int, seed: int) -> None:
        super().__init__()
        mask = weight != 0
        k = 2 ** bits
        values = weight[mask]
        if len(values) == 0:
            centroids, codes = torch.zeros(k), torch.zeros(0, dtype=torch.long)
        else:
            centroids, codes = kmeans_1d(values, k, init, iterations, seed)
        full = torch.zeros(weight.shape, dtype=torch.long)
        full[mask] = codes
        self.codebook = nn.Parameter(centroids)
        self.register_buffer("codes", full)
        self.register_buffer("mask", mask)

    def forward(self, _original: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask, self.codebook[self.codes], torch.zeros((), dtype=self.codebook.dtype,
                                                                                 device=self.codebook.device))


def apply_sharing(model: nn.Module, cfg: ShareConfig, seed: int = 0) -> dict[str, int]:
    """Cluster every conv/linear weight in place (parametrised, ready for centroid fine-tuning); returns the
    bits used per layer."""
    used = {}
    for name, m in shared_layers(model):
        bits = layer_bits(name, m, cfg)
        with torch.no_grad():
            p = SharedWeight(m.weight.detach().cpu(), bits, cfg.init, cfg.kmeans_iterations, seed)
        parametrize.register_parametrization(m, "weight", p.to(m.weight.device))
        m.parametrizations.weight.original.requires_grad_(False)
        used[name] = bits
    return used


def bake(model: nn.Module) -> nn.Module:
    """Replace each parametrised weight by its value (codebook[codes], zeros kept): a plain module again."""
    for _, m in shared_layers(model):
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
            m.weight.requires_grad_(True)
    return model


def share(model: nn.Module, data: Data, cfg: ShareConfig | None = None, *, teacher: nn.Module | None = None,
          device: torch.device | str | None = None, seed: int = 0) -> dict[str, Any]:
    """Share the weights of ``model`` in place (k-means per layer, centroid fine-tuning); returns notes with
    the bits per layer and the validation accuracy before sharing, after clustering and after fine-tuning."""
    cfg = cfg or ShareConfig()
    if not shared_layers(model):
        raise ValueError(f"{type(model).__name__} has no convolution or linear weights to share")
    notes: dict[str, Any] = {"val_accuracy_before": evaluate_accuracy(model, data.val, "cpu")}
    notes["bits"] = apply_sharing(model, cfg, seed)
    notes["val_accuracy_clustered"] = evaluate_accuracy(model, data.val, "cpu")
    finetune(model, data, cfg, cfg.epochs, teacher=teacher, device=device, seed=seed, label="centroids")
    bake(model)
    notes["val_accuracy_shared"] = evaluate_accuracy(model, data.val, "cpu")
    return notes

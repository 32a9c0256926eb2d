"""Fine-tuning an existing model further: the ``finetune`` step, and the between-step and recovery epochs of
pruning (structured and unstructured) all call ``finetune``. With ``distill`` the unmodified input model is
the frozen teacher (knowledge-distillation recovery)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune
from pydantic import Field, model_validator

from drivecompress.core import Context, State, StepConfig, register_step
from drivecompress.data.api import Data
from drivecompress.distill.step import DistillConfig, Distiller
from drivecompress.errors import BadInputError
from drivecompress.train.loop import TrainConfig, TrainResult, fit
from drivecompress.utils.device import select_device


class TuningConfig(DistillConfig, StepConfig):
    """Hyper-parameters of a fine-tune (cosine schedule, best-on-validation weights kept); with ``distill``
    the input model's soft targets guide it (the distillation keys apply)."""

    lr: float = Field(0.01, gt=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    batch_size: int = Field(128, ge=1)
    train_subset: int | None = Field(None, ge=1, description="train on a seeded subset (quick runs)")
    distill: bool = Field(True, description="recover with soft targets from the unmodified input model")
    swa_epochs: int = Field(0, ge=0, description="average the weights of the last N epochs of the final "
                            "fine-tune (recovery), as the shipped baseline was made; masks and zeros are kept")
    swa_lr: float | None = Field(None, gt=0, description="constant lr of the averaged epochs (default: lr / 2)")
    label_smoothing: float | None = Field(None, ge=0, lt=1, description="label smoothing of the cross-entropy "
                                          "term (default: 0 with distill, whose soft targets already smooth; 0.1 "
                                          "without, as the baseline was trained). 0 without distill sharpens a "
                                          "smoothed model's soft targets to make it a teacher")

    mixup: float = Field(0.0, ge=0, le=1, description="fraction of each batch replaced by mixtures of two "
                         "training images, which only the teacher labels (function matching): inputs between the "
                         "classes teach the model where the teacher's decision boundaries lie, for a compressed "
                         "model that agrees with its input model image by image; needs distill: true")

    @model_validator(mode="after")
    def _check_mixup(self) -> TuningConfig:
        if self.mixup > 0 and not self.distill:
            raise ValueError("mixup needs distill: true (a mixed image has no label; only the teacher's "
                             "soft targets say what it is)")
        return self

    def smoothing(self) -> float:
        """The label smoothing in force: the key's value, else the default described on the key."""
        return self.label_smoothing if self.label_smoothing is not None else (0.0 if self.distill else 0.1)

    def check_swa(self, epochs: int, what: str) -> None:
        """Refuse an average over more epochs than the fine-tune it applies to has."""
        if self.swa_epochs and self.swa_epochs >= epochs:
            raise ValueError(f"swa_epochs ({self.swa_epochs}) must be fewer than {what} ({epochs})")


def hold_zeros(model: nn.Module, min_fraction: float = 0.01) -> list[nn.Module]:
    """Mask the exact zeros of every convolution and linear weight so that training keeps them zero; returns
    the layers masked. Only when at least ``min_fraction`` of those weights are zero (a sparse model,
    not a dense one with a few stray zeros), and never a layer that is all zeros (a zero-initialised head must
    still learn). Layers already under a pruning mask keep theirs. ``release_zeros`` folds the masks in."""
    layers = [m for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    total = sum(m.weight.numel() for m in layers)
    zeros = sum(int((m.weight == 0).sum()) for m in layers)
    if not total or zeros < min_fraction * total:
        return []
    held = []
    for m in layers:
        mask = m.weight.detach() != 0
        if tprune.is_pruned(m) or bool(mask.all()) or not bool(mask.any()):
            continue
        tprune.custom_from_mask(m, "weight", mask)
        held.append(m)
    return held


def release_zeros(layers: list[nn.Module]) -> None:
    """Fold the masks ``hold_zeros`` put on ``layers`` into their weights (the zeros stay, the
    re-parametrisation goes); masks that were there before are left alone."""
    for m in layers:
        tprune.remove(m, "weight")


def finetune(model: nn.Module, data: Data, cfg: TuningConfig, epochs: int, *, teacher: nn.Module | None = None,
             device: torch.device | str | None = None, seed: int = 0, label: str = "finetune",
             average: bool = False) -> TrainResult | None:
    """Fine-tune ``model`` in place for ``epochs``; returns the training result (None for 0 epochs).
    ``average``: this is the final fine-tune, so ``cfg.swa_epochs`` applies (weight averaging). With a
    ``FinetuneConfig`` whose ``keep_zeros`` is on, a sparse model's zeros are held (``hold_zeros``)."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise BadInputError(f"finetune: epochs must be a whole number >= 0, got {epochs!r}")
    if epochs == 0:
        return None
    held = hold_zeros(model) if isinstance(cfg, FinetuneConfig) and cfg.keep_zeros else []
    try:
        return _fit(model, data, cfg, epochs, teacher, device, seed, label, average)
    finally:
        release_zeros(held)


def _fit(model: nn.Module, data: Data, cfg: TuningConfig, epochs: int, teacher: nn.Module | None,
         device: torch.device | str | None, seed: int, label: str, average: bool) -> TrainResult:
    dev = select_device(device) if not isinstance(device, torch.device) else device
    swa = cfg.swa_epochs if average else 0
    tc = TrainConfig(epochs=epochs, lr=cfg.lr, optimizer=cfg.optimizer, batch_size=cfg.batch_size,
                     schedule="cosine", warmup_frac=0.0, seed=seed,
                     label_smoothing=cfg.smoothing(),
                     swa_epochs=swa, swa_lr=cfg.swa_lr or cfg.lr / 2, mixup=cfg.mixup)
    train = data.train.head(cfg.train_subset, seed=seed)
    if cfg.distill:
        if teacher is None:
            raise ValueError("distill: true needs a teacher (the unmodified input model)")
        dc = DistillConfig(**{**cfg.model_dump(include=set(DistillConfig.model_fields)),
                              "label_smoothing": cfg.smoothing()})
        d = Distiller(model, teacher, dc, dev, data.example_input())
        try:
            result = fit(model, train, data.val, tc, dev, loss_fn=d.loss_fn(), description=label)
        finally:
            d.close()
    else:
        result = fit(model, train, data.val, tc, dev, description=label)
    model.cpu().eval()
    return result


class FinetuneConfig(TuningConfig):
    """Train the current model further; ``distill: true`` lets the input model's soft targets guide it."""

    epochs: int = Field(2, ge=1)
    distill: bool = False
    keep_zeros: bool = Field(True, description="a sparse input model stays sparse: convolution and linear "
                             "weights that are exactly zero at the start are held at zero (when at least 1% of "
                             "them are; an all-zero layer trains), so a fine-tune after unstructured pruning, "
                             "e.g. learning-rate rewinding, keeps the sparsity")

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        self.check_swa(self.epochs, "epochs")
        return self


@register_step("finetune", FinetuneConfig)
def _finetune_step(state: State, cfg: FinetuneConfig, ctx: Context) -> State:
    finetune(state.module, ctx.data, cfg, cfg.epochs, teacher=ctx.teacher, device=ctx.device, seed=ctx.seed,
             average=True)
    return State(module=state.module)

"""Fine-tuning an existing model further: the ``finetune`` step, and the between-step and recovery epochs of
pruning (structured and unstructured) all call ``finetune``. With ``distill`` the unmodified input model is
the frozen teacher (knowledge-distillation recovery)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field

from drivecompress.core import Context, State, StepConfig, register_step
from drivecompress.data.api import Data
from drivecompress.distill.step import DistillConfig, Distiller
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


def finetune(model: nn.Module, data: Data, cfg: TuningConfig, epochs: int, *, teacher: nn.Module | None = None,
             device: torch.device | str | None = None, seed: int = 0, label: str = "finetune") -> TrainResult | None:
    """Fine-tune ``model`` in place for ``epochs``; returns the training result (None for 0 epochs)."""
    if epochs <= 0:
        return None
    dev = select_device(device) if not isinstance(device, torch.device) else device
    tc = TrainConfig(epochs=epochs, lr=cfg.lr, optimizer=cfg.optimizer, batch_size=cfg.batch_size,
                     schedule="cosine", warmup_frac=0.0, seed=seed,
                     label_smoothing=0.0 if cfg.distill else 0.1)
    train = data.train.head(cfg.train_subset, seed=seed)
    if cfg.distill:
        if teacher is None:
            raise ValueError("distill: true needs a teacher (the unmodified input model)")
        d = Distiller(model, teacher, DistillConfig(**cfg.model_dump(include=set(DistillConfig.model_fields))), dev,
                      data.example_input())
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


@register_step("finetune", FinetuneConfig)
def _finetune_step(state: State, cfg: FinetuneConfig, ctx: Context) -> State:
    finetune(state.module, ctx.data, cfg, cfg.epochs, teacher=ctx.teacher, device=ctx.device, seed=ctx.seed)
    return State(module=state.module)

"""Fine-tuning shared by every step that trains an existing model further (``finetune``, the pruning
steps' between-step and recovery epochs): the project's loop, optionally with soft targets from the
unmodified input model (knowledge-distillation recovery, issue #7 use b)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from drivecompress.distill.step import DistillConfig, Distiller
from drivecompress.pipeline.registry import Context, State, StepConfig
from drivecompress.train.loop import TrainConfig, fit


class Tuning(StepConfig):
    """Hyper-parameters of a fine-tune; ``distill`` recovers with the input model as frozen teacher."""

    lr: float = Field(0.01, gt=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    batch_size: int = Field(128, ge=1)
    train_subset: int | None = Field(None, ge=1)
    distill: bool = Field(True, description="recover with soft targets from the unmodified input model")
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1)


def tune(state: State, cfg: Tuning, ctx: Context, epochs: int, label: str) -> None:
    """Fine-tune ``state.module`` in place for ``epochs`` (cosine schedule, best-on-validation kept)."""
    if epochs <= 0:
        return
    tc = TrainConfig(epochs=epochs, lr=cfg.lr, optimizer=cfg.optimizer, batch_size=cfg.batch_size,
                     schedule="cosine", warmup_frac=0.0, seed=ctx.seed,
                     label_smoothing=0.0 if cfg.distill else 0.1)
    train = ctx.splits.train.head(cfg.train_subset, seed=ctx.seed)
    if cfg.distill:
        d = Distiller(state.module, ctx.teacher, DistillConfig(temperature=cfg.temperature, alpha=cfg.alpha),
                      ctx.device)
        try:
            fit(state.module, train, ctx.splits.val, tc, ctx.device, loss_fn=d.loss_fn(), description=label)
        finally:
            d.close()
    else:
        fit(state.module, train, ctx.splits.val, tc, ctx.device, description=label)
    state.module.cpu().eval()

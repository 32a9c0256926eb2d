"""Distillation steps: train a new, smaller student from the current model (the teacher)."""

from __future__ import annotations

import copy
from typing import Literal

from pydantic import Field

from drivecompress.distill.step import DistillConfig, Distiller
from drivecompress.models import build_model, default_spec
from drivecompress.pipeline.registry import Context, State, StepConfig, register_step
from drivecompress.train.loop import TrainConfig, evaluate_accuracy, fit


class DistillStep(StepConfig):
    """Replace the model by a student from the registry trained on the teacher's soft targets."""

    arch: str = "mobilenetv2"
    width: float = Field(0.5, gt=0)
    epochs: int = Field(10, ge=1)
    lr: float = Field(0.1, gt=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    batch_size: int = Field(128, ge=1)
    mode: Literal["soft", "hard", "none"] = "soft"
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1)
    feature_pairs: list[tuple[str, str]] = Field(default_factory=list)
    feature_weight: float = Field(1.0, ge=0)
    train_subset: int | None = Field(None, ge=1)


def distill_into(student, teacher, cfg: DistillStep, ctx: Context):
    """Train ``student`` against ``teacher`` with the project's loop; returns (student, TrainResult)."""
    tc = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, optimizer=cfg.optimizer, batch_size=cfg.batch_size,
                     seed=ctx.seed, label_smoothing=0.1 if cfg.mode == "none" else 0.0)
    train = ctx.splits.train.head(cfg.train_subset, seed=ctx.seed)
    if cfg.mode == "none":  # the ablation's plain cross-entropy student
        return student, fit(student, train, ctx.splits.val, tc, ctx.device, description="student (CE)")
    dc = DistillConfig(mode=cfg.mode, temperature=cfg.temperature, alpha=cfg.alpha,
                       feature_pairs=[tuple(p) for p in cfg.feature_pairs], feature_weight=cfg.feature_weight)
    d = Distiller(student, teacher, dc, ctx.device)
    try:
        result = fit(student, train, ctx.splits.val, tc, ctx.device, loss_fn=d.loss_fn(), description="distill")
    finally:
        d.close()
    return student, result


@register_step("distill", DistillStep)
def distill(state: State, cfg: DistillStep, ctx: Context) -> State:
    spec = default_spec(cfg.arch, cfg.width)
    spec["input_norm"] = copy.deepcopy(state.module.spec()["input_norm"])
    student = build_model(spec)
    student, result = distill_into(student, state.module, cfg, ctx)
    student.cpu().eval()
    notes = {"student": spec, "best_val_accuracy": result.best_val_accuracy, "best_epoch": result.best_epoch,
             "teacher_val_accuracy": evaluate_accuracy(state.module, ctx.splits.val, ctx.device)}
    return State(module=student, notes=notes)

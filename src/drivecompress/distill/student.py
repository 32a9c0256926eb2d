"""Distillation into a new student: any module learns from any teacher (``distill``), and the recipe step
that builds a smaller student from the zoo and replaces the model with it."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn
from pydantic import Field, model_validator

from drivecompress.core import Context, State, StepConfig, register_step
from drivecompress.data.api import Data
from drivecompress.distill.step import DistillConfig, Distiller, OnnxTeacher
from drivecompress.errors import BadInputError
from drivecompress.models import build_model, default_spec
from drivecompress.train.loop import TrainConfig, TrainResult, evaluate_accuracy, fit
from drivecompress.utils.device import select_device


class StudentConfig(DistillConfig, StepConfig):
    """A student from the zoo (``arch`` at ``width``, or a whole ``spec`` such as one an architecture search
    found) trained on the teacher's soft targets; ``mode: none`` trains it with plain cross-entropy (the
    ablation's baseline). ``swa_epochs`` averages the last epochs' weights as the shipped baseline was made."""

    #: builds a new student and needs only the teacher's logits, which an .onnx input gives (OnnxTeacher)
    needs_module: ClassVar[bool] = False
    makes_module: ClassVar[bool] = True

    arch: str = "mobilenetv2"
    width: float = Field(0.5, gt=0)
    spec: dict[str, Any] | None = Field(
        None, description="the student's full zoo spec (overrides arch/width; classes, channels and input "
        "normalization still come from the data and the teacher)")
    epochs: int = Field(10, ge=1)
    lr: float = Field(0.1, gt=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    batch_size: int = Field(128, ge=1)
    mode: Literal["soft", "hard", "none"] = "soft"
    train_subset: int | None = Field(None, ge=1)
    swa_epochs: int = Field(0, ge=0, description="average the weights of the last N epochs (0: off)")
    swa_lr: float = Field(0.03, gt=0)

    @model_validator(mode="after")
    def _check(self) -> StudentConfig:
        """Refused when the recipe is read (exit 2), not an hour into training."""
        if self.swa_epochs >= self.epochs:
            raise ValueError(f"swa_epochs ({self.swa_epochs}) must be fewer than epochs ({self.epochs})")
        if self.spec is not None:
            try:  # build_model turns any malformed spec into BadInputError (the registry's one check)
                build_model({**self.spec, "num_classes": 2})
            except BadInputError as exc:
                raise ValueError(f"spec does not build a model: {exc}") from None
        return self


def distill(student: nn.Module, teacher: nn.Module, data: Data, cfg: StudentConfig | None = None, *,
            device: torch.device | str | None = None, seed: int = 0) -> TrainResult:
    """Train ``student`` in place against the frozen ``teacher`` with the project's loop (both any module
    taking the data's images)."""
    cfg = cfg or StudentConfig()
    dev = device if isinstance(device, torch.device) else select_device(device)
    tc = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, optimizer=cfg.optimizer, batch_size=cfg.batch_size,
                     seed=seed, label_smoothing=0.1 if cfg.mode == "none" else 0.0,
                     swa_epochs=cfg.swa_epochs, swa_lr=cfg.swa_lr)
    train = data.train.head(cfg.train_subset, seed=seed)
    if cfg.mode == "none":
        return fit(student, train, data.val, tc, dev, description="student (CE)")
    dc = DistillConfig(**cfg.model_dump(include=set(DistillConfig.model_fields)))
    d = Distiller(student, teacher, dc, dev, data.example_input())
    try:
        result = fit(student, train, data.val, tc, dev, loss_fn=d.loss_fn(), description="distill")
    finally:
        d.close()
    student.cpu().eval()
    return result


def student_spec(cfg: StudentConfig, teacher: nn.Module, data: Data) -> dict[str, Any]:
    """The zoo student's spec for this data (classes, channels); it keeps a zoo teacher's input normalization."""
    if cfg.spec is not None:
        spec = copy.deepcopy(cfg.spec)
        spec["num_classes"] = data.num_classes
    else:
        spec = default_spec(cfg.arch, cfg.width, num_classes=data.num_classes)
    c = data.input_shape[0]
    if c != 3:
        spec["in_channels"] = c
    spec["input_norm"] = student_norm(teacher, c)
    return spec


def student_norm(teacher: nn.Module | None, channels: int) -> dict[str, Any]:
    """A new student's input normalization: a zoo teacher's own, else per-image standardization (for any
    other teacher, e.g. an ONNX graph whose normalization is hidden inside it)."""
    if hasattr(teacher, "spec"):
        return copy.deepcopy(teacher.spec()["input_norm"])
    return {"mean": [0.5] * channels, "std": [0.25] * channels, "per_image": True}


def teacher_of(state: State) -> nn.Module:
    """The current model as a teacher: its module, else (an .onnx input) its float graph on ONNX Runtime."""
    return state.module if state.module is not None else OnnxTeacher(state.fp32_onnx)


@register_step("distill", StudentConfig)
def _distill_step(state: State, cfg: StudentConfig, ctx: Context) -> State:
    # The student is laid out for the current model (its input normalization) but learns from the recipe's
    # teacher, like every other distilling step (the input model unless the recipe names one or an ensemble).
    # An .onnx input teaches through ONNX Runtime (its float graph, baseline.onnx): a new student needs only logits.
    teacher = ctx.teacher if ctx.teacher is not None else teacher_of(state)
    spec = student_spec(cfg, state.module, ctx.data)
    student = build_model(spec)
    result = distill(student, teacher, ctx.data, cfg, device=ctx.device, seed=ctx.seed)
    notes = {"student": spec, "best_val_accuracy": result.best_val_accuracy, "best_epoch": result.best_epoch,
             "teacher_val_accuracy": evaluate_accuracy(teacher, ctx.data.val, ctx.device)}
    return dataclasses.replace(State(module=student), notes=notes)

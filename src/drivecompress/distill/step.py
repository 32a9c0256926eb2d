"""A teacher plugged into the project's training loop: the loss closes over a frozen teacher (eval mode)
that sees exactly the student's augmented batch; optional feature transfer through forward hooks."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field

from drivecompress.distill.losses import (
    FeatureAdapter,
    feature_loss,
    hard_target_loss,
    missed_weights,
    soft_target_loss,
)
from drivecompress.evaluate.loading import LoadedModel
from drivecompress.evaluate.predictor import OnnxPredictor
from drivecompress.train.loop import LossFn


class DistillConfig(BaseModel):
    """How a student learns from its teacher: Hinton soft targets (``temperature``, ``alpha`` = weight of the
    teacher term) or the teacher's hard labels, plus optional feature transfer between named modules."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["soft", "hard"] = "soft"
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    feature_pairs: list[tuple[str, str]] = Field(
        default_factory=list, description='(student module, teacher module) matched, e.g. ("blocks.3", "blocks.5")')
    feature_weight: float = Field(1.0, ge=0)
    missed_weight: float = Field(1.0, ge=1, description="weight of an image the teacher gets right and the "
                                 "student misses (hard-example emphasis for recovery; 1 = plain mean)")


class TeacherEnsemble(nn.Module):
    """Several teachers teaching as one: the mean of their logits. Averaging independently trained runs is the
    cheapest stronger teacher (two shipped-baseline runs, 98.03% and 97.81%, score 98.17% together); logits,
    not probabilities, are averaged so the distillation temperature softens the ensemble as it would one model.
    Feature pairs name a member's module as ``members.<i>.<name>``."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a teacher ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x).float() for m in self.members]).mean(dim=0)


class OnnxTeacher(nn.Module):
    """A teacher that is only an ONNX graph (a team's exported model, ``compress model.onnx`` or ``search
    --teacher model.onnx``): its logits come from ONNX Runtime, so logit distillation needs nothing but the
    file. It has no weights and no inner modules, so feature transfer cannot name its layers (refused by the
    Distiller); the batch goes through the CPU whatever the student's device."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.predictor = OnnxPredictor(self.path)
        # the file's identity as its only "weights": a resumed run that names this teacher checks them
        digest = hashlib.sha256(self.path.read_bytes()).digest()
        self.register_buffer("graph_sha256", torch.tensor(list(digest), dtype=torch.uint8), persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.predictor(x.detach().float().cpu().contiguous().numpy())).to(x.device)


def teacher_module(loaded: LoadedModel) -> nn.Module:
    """The module that teaches from a loaded MODEL: its PyTorch module, or its ONNX graph through ONNX Runtime."""
    return loaded.module if loaded.module is not None else OnnxTeacher(loaded.onnx_path)


class _Tap:
    """Keeps the latest output of a module (a forward hook)."""

    def __init__(self, module: nn.Module) -> None:
        self.out: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, _m, _i, out) -> None:
        self.out = out


def _channels(model: nn.Module, name: str, example: torch.Tensor) -> int:
    mod = dict(model.named_modules())[name]
    with torch.no_grad():
        tap = _Tap(mod)
        model.eval()(torch.zeros_like(example))
        tap.handle.remove()
    return int(tap.out.shape[1])


class Distiller:
    """Builds the loss for ``fit`` and cleans up after training (hooks, adapters)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: DistillConfig, device: torch.device,
                 example: torch.Tensor | None = None) -> None:
        self.cfg, self.student = cfg, student
        s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
        for s_name, t_name in cfg.feature_pairs:
            if isinstance(teacher, OnnxTeacher):
                raise ValueError(f"feature pair ({s_name!r}, {t_name!r}): the teacher {teacher.path.name} is an "
                                 "ONNX graph, whose layers cannot be tapped (give its checkpoint folder, or drop "
                                 "feature_pairs)")
            if s_name not in s_mods or t_name not in t_mods:
                raise ValueError(f"feature pair ({s_name!r}, {t_name!r}): no such module in student/teacher")
        if cfg.feature_pairs and example is None:
            raise ValueError("feature transfer needs an example input to size its adapters")
        self.teacher = teacher.to(device).eval()
        # Frozen while it teaches; close() gives the caller's model its flags back (a user may train it later).
        self._teacher_grad = [(p, p.requires_grad) for p in self.teacher.parameters()]
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        adapters = [FeatureAdapter(_channels(student, s, example), _channels(teacher, t, example))
                    for s, t in cfg.feature_pairs]
        # Registered on the student so fit's optimizer trains them; removed by close().
        student.kd_adapters = nn.ModuleList(adapters)
        self.s_taps = [_Tap(s_mods[s]) for s, _ in cfg.feature_pairs]
        self.t_taps = [_Tap(t_mods[t]) for _, t in cfg.feature_pairs]

    def loss_fn(self) -> LossFn:
        cfg = self.cfg

        def loss(logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                t_logits = self.teacher(images.float()).float()
            w = missed_weights(logits, t_logits, labels, cfg.missed_weight)
            if cfg.mode == "hard":
                total = hard_target_loss(logits, t_logits, w)
            else:
                total = soft_target_loss(logits, t_logits, labels, cfg.temperature, cfg.alpha, cfg.label_smoothing,
                                         w)
            for adapter, s_tap, t_tap in zip(self.student.kd_adapters, self.s_taps, self.t_taps, strict=True):
                total = total + cfg.feature_weight * feature_loss(s_tap.out.float(), t_tap.out.float(), adapter)
            return total

        return loss

    def close(self) -> None:
        for tap in self.s_taps + self.t_taps:
            tap.handle.remove()
        for p, flag in self._teacher_grad:
            p.requires_grad_(flag)
        if hasattr(self.student, "kd_adapters"):
            del self.student.kd_adapters

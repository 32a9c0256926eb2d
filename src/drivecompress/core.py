"""The step contract shared by every technique: a frozen, typed config bound to one handler.

``@register_step("ptq", PTQConfig)`` sits next to the technique itself (torchao's pattern), so the recipe's
step config *is* the library's config: declared once, defaults written once. The runner only sequences.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

if TYPE_CHECKING:
    from drivecompress.data.api import Data


def _numeric(annotation: Any) -> bool:
    """Whether a field's type is int or float (alone or in a union such as ``int | None``)."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(a in (int, float) for a in typing.get_args(annotation))
    return False


class StepConfig(BaseModel):
    """Base of every technique's config: frozen; unknown keys, NaN or infinite numbers, and booleans where a
    number is expected (YAML's ``epochs: true`` once trained one epoch) are errors naming the key."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        field_info = cls.model_fields.get(info.field_name or "")
        if isinstance(v, bool) and field_info is not None and _numeric(field_info.annotation):
            raise ValueError("a boolean where a number is expected")
        return v
    #: The technique changes the PyTorch module (pruning, QAT, distillation): an ONNX input cannot take it.
    needs_module: ClassVar[bool] = True
    #: The step's output is a PyTorch module even from an ONNX input (distillation into a new student), so
    #: the steps after it can change a module.
    makes_module: ClassVar[bool] = False
    #: What the step needs, in words, for the error when the input cannot give it.
    needs: ClassVar[str] = "the PyTorch module"

    def check_input(self, module: nn.Module | None, where: str) -> None:
        """Refuse (BadInputError naming ``where``) an input model this step cannot take, before the run writes
        anything. Most steps take any module; ``start`` checks its checkpoint was made from this one."""


@dataclass
class State:
    """What flows between steps: the float module (None when the input was an ONNX file) and, once a
    quantization step ran, the deployable int8 ONNX file that is now the artifact being measured. ``fp32_onnx``
    is the float graph of an ONNX input."""

    module: nn.Module | None
    onnx_path: Path | None = None
    fp32_onnx: Path | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """Read-only facts a handler may use: the data, the distillation teacher (the recipe's ``teacher`` when it
    names one, else the unmodified input model), where to write, the device, the step's seed, and the
    unmodified input model itself (the gate's baseline; the template of a user-defined network)."""

    data: Data
    teacher: nn.Module | None
    step_dir: Path
    device: torch.device
    seed: int
    input_model: nn.Module | None = None

    def template(self) -> nn.Module | None:
        """The module that rebuilds a user-defined network's checkpoint: the input model (the teacher when a
        caller built the context without it, as before ``input_model`` existed)."""
        return self.input_model if self.input_model is not None else self.teacher


Handler = Callable[[State, Any, Context], State]
_STEPS: dict[str, tuple[type[StepConfig], Handler]] = {}


def register_step(name: str, config_cls: type[StepConfig]) -> Callable[[Handler], Handler]:
    """Register ``handler(state, config, context) -> state`` for the recipe step type ``name``."""

    def deco(handler: Handler) -> Handler:
        if name in _STEPS and _STEPS[name][1] is not handler:
            raise ValueError(f"step type '{name}' registered twice")
        _STEPS[name] = (config_cls, handler)
        return handler

    return deco


def step_types() -> list[str]:
    """Every registered step type. Importing the package registers them (each technique module registers
    its own step when imported by ``drivecompress/__init__.py``)."""
    import drivecompress  # noqa: F401

    return sorted(_STEPS)


def lookup(name: str) -> tuple[type[StepConfig], Handler]:
    step_types()
    return _STEPS[name]

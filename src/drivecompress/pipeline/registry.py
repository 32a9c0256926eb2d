"""Step registry: ``@register_step("ptq", PTQStep)`` binds a typed config class to its handler.

Adding a technique = one config class + one handler + its tests; the runner never grows if/elif chains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch.nn as nn
from pydantic import BaseModel, ConfigDict

from drivecompress.data.dataset import Splits


class StepConfig(BaseModel):
    """Base of every step's config: frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = None
    #: The runner refuses to run such a step after a quantization step produced an int8 artifact.
    needs_float_model: ClassVar[bool] = True


@dataclass
class State:
    """What flows between steps: the fp32 module (possibly pruned/distilled) and, once a quantization
    step ran, the deployable int8 ONNX file that replaces it as the artifact being measured."""

    module: nn.Module
    onnx_path: Path | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """Read-only facts a handler may use: data, the input model, where to write, the device."""

    splits: Splits
    teacher: nn.Module
    step_dir: Path
    device: Any
    seed: int


Handler = Callable[[State, Any, Context], State]
_STEPS: dict[str, tuple[type[StepConfig], Handler]] = {}


def register_step(name: str, config_cls: type[StepConfig]):
    """Register ``handler(state, config, context) -> state`` for step type ``name``."""

    def deco(handler: Handler) -> Handler:
        if name in _STEPS:
            raise ValueError(f"step type '{name}' registered twice")
        _STEPS[name] = (config_cls, handler)
        return handler

    return deco


def step_types() -> list[str]:
    from drivecompress.pipeline import steps, steps_distill, steps_prune  # noqa: F401  (registers the steps)

    return sorted(_STEPS)


def lookup(name: str) -> tuple[type[StepConfig], Handler]:
    step_types()
    return _STEPS[name]

"""The ``start`` step: continue a recipe from a checkpoint an earlier run produced from the same input model.

Why: a chain such as distill (an hour of training) → QAT (minutes) cannot run whole inside a 20-minute demo;
the demo starts from the distilled checkpoint that ``recipes/student.yaml`` wrote and runs, measures and gates
its own remaining steps against the *input* model (the baseline), not against the checkpoint. Every checkpoint
a run writes records ``derived_from.model_sha256`` (the input model's weights); ``start`` refuses a checkpoint
made from any other model before the run writes anything, so a start point can never be paired with a baseline
it was not derived from.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch.nn as nn
from pydantic import Field

from drivecompress.core import Context, State, StepConfig, register_step
from drivecompress.data.gtsrb import repo_path
from drivecompress.errors import BadInputError
from drivecompress.train.checkpoint import load_checkpoint, read_meta, weights_sha256


class StartConfig(StepConfig):
    """Replace the model with the checkpoint at ``path`` (a folder with model.json + model.safetensors)."""

    path: str = Field(description="checkpoint folder; a relative path is tried from the working directory, "
                      "then from the repository root")
    made_by: str | None = Field(None, description="the command that reproduces the checkpoint (reported)")

    def folder(self) -> Path:
        return repo_path(self.path)

    def check_input(self, module: nn.Module | None, where: str) -> None:
        folder = self.folder()
        if not (folder / "model.json").is_file():
            raise BadInputError(f"{where}: {folder}: no checkpoint there (model.json missing)")
        made_from = (read_meta(folder).get("derived_from") or {}).get("model_sha256")
        if not made_from:
            raise BadInputError(f"{where}: {folder}/model.json does not record the model it was made from "
                                "(derived_from.model_sha256); only a checkpoint written by a drivecompress run can "
                                "be a start point")
        if module is None or weights_sha256(module) != made_from:
            raise BadInputError(f"{where}: {folder} was made from another model (derived_from.model_sha256 "
                                f"{made_from[:12]}... differs from the input model's); re-make it from this model"
                                + (f" with: {self.made_by}" if self.made_by else ""))


@register_step("start", StartConfig)
def _start_step(state: State, cfg: StartConfig, ctx: Context) -> State:
    # The input module is the template of a user-defined network's checkpoint, exactly as --resume uses it.
    module, meta = load_checkpoint(cfg.folder(), template=ctx.template())
    notes = {"checkpoint": str(cfg.folder()), "derived_from": meta.get("derived_from"), "made_by": cfg.made_by}
    return dataclasses.replace(State(module=module), notes=notes)

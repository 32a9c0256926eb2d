"""The Python API the CLI mirrors: compress a user's own model on the user's own data.

``compress`` writes exactly the run folder ``drivecompress compress`` writes; a gate refusal is a result
(``passed`` False, the model kept as ``model.rejected.onnx``), not an exception.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from drivecompress.data.api import Data
from drivecompress.errors import GateRefusedError
from drivecompress.evaluate.loading import LoadedModel, load_model_arg
from drivecompress.pipeline.recipe import Recipe, load_recipe, parse_recipe
from drivecompress.train.checkpoint import Template, load_checkpoint, save_checkpoint

ModelLike = nn.Module | str | os.PathLike


@dataclass(frozen=True)
class CompressResult:
    """What a compression run produced: the gate's verdict, the deploy ONNX and report.json's content."""

    passed: bool
    model_path: Path
    report: dict[str, Any]
    out: Path

    @property
    def violations(self) -> list[str]:
        return list(self.report["gate"]["violations"])


def as_recipe(recipe: Recipe | dict[str, Any] | str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """A Recipe from a YAML path, a plain dict (same keys as the YAML) or a Recipe, with ``--set``-style
    overrides applied and re-validated."""
    if isinstance(recipe, Recipe):
        return parse_recipe(recipe.resolved(), recipe.name, overrides) if overrides else recipe
    if isinstance(recipe, dict):
        return parse_recipe(recipe, "recipe", overrides)
    from drivecompress.data.gtsrb import repo_path

    return load_recipe(repo_path(recipe), overrides)  # "recipes/x.yaml" also names a shipped user recipe


def as_data(data: Data | str | os.PathLike | None) -> Data:
    """``Data`` as given, or the project's npz at a path (default: the documented data location)."""
    return data if isinstance(data, Data) else Data.from_npz(data)


def as_model(model: ModelLike, template: Template | None = None) -> LoadedModel:
    """An ``nn.Module``, a checkpoint folder, an ``.onnx`` file, ``"baseline"`` or ``"searched"``."""
    if isinstance(model, nn.Module):
        return LoadedModel(source=Path(f"<{type(model).__name__}>"), module=model.cpu().eval())
    tmpl = template() if callable(template) and not isinstance(template, nn.Module) else template
    return load_model_arg(model, template=tmpl)


def compress(model: ModelLike, recipe: Recipe | dict[str, Any] | str | os.PathLike, *,
             data: Data | str | os.PathLike | None = None, out: str | os.PathLike, resume: bool = False,
             overrides: list[str] | None = None, device: str | torch.device | None = None,
             template: Template | None = None) -> CompressResult:
    """Run ``recipe`` on ``model`` with ``data`` into the run folder ``out`` (the CLI's ``compress``).

    Args:
        model: any ``nn.Module`` taking float NCHW images in [0, 1], a checkpoint folder, an ``.onnx`` file
            (graph-only steps such as ``ptq``, and ``distill``, whose new student learns from the graph's
            logits on ONNX Runtime), ``"baseline"`` or ``"searched"``.
        recipe: a YAML path, a dict with the YAML's keys, or a Recipe.
        data: a ``Data`` (``Data.from_arrays``/``from_npz``/``from_folder``) or an npz path.
        resume: continue a killed run in ``out`` from its last completed step.
        overrides: ``["steps.0.ratio=0.3", ...]``, type-checked like ``--set``.
        template: the user's module or constructor, to resume a run of a user-defined network whose
            checkpoints reload by layout.
    Raises:
        BadInputError: for inputs it cannot take (nothing written).
    """
    from drivecompress.pipeline.runner import run_recipe

    rec = as_recipe(recipe, overrides)
    d = as_data(data)
    loaded = as_model(model, template)
    out = Path(out)
    try:
        report = run_recipe(loaded, rec, d, out, resume=resume, device=device)
    except GateRefusedError as exc:
        report = exc.report or {}
    return CompressResult(passed=bool(report["gate"]["passed"]), model_path=out / report["artifact"], report=report,
                          out=out)


def save_model(model: nn.Module, folder: str | os.PathLike, data: Data | None = None,
               input_shape: tuple[int, int, int] | None = None) -> Path:
    """Save weights (safetensors) and what rebuilds the architecture (JSON) — never pickle. A zoo model saves
    its spec; any other module its per-layer widths and a fingerprint (``input_shape`` or ``data`` needed)."""
    shape = input_shape or (data.input_shape if data is not None else None)
    meta = {"class_names": list(data.class_names)} if data is not None else None
    return save_checkpoint(folder, model, meta, input_shape=shape)


def load_model(folder: str | os.PathLike, template: Template | None = None) -> nn.Module:
    """Load a checkpoint folder; a user-defined network needs ``template`` (the module or its constructor):
    its layers are reshaped to the saved widths, the weights loaded, and the fingerprint checked."""
    return load_checkpoint(folder, template=template)[0]


def unpack(archive: str | os.PathLike, out: str | os.PathLike, *, data: Data | str | os.PathLike | None = None,
           template: Template | None = None) -> dict[str, Any]:
    """Decode a ``.dcz`` archive into the checkpoint folder ``out`` (created; must be new or empty) and, when
    the network can be rebuilt (a zoo model, or ``template`` given), its fp32 deploy ONNX ``out/model.onnx``,
    parity-checked on test images of ``data``. Returns what was written and the decode time."""
    from drivecompress.data.transforms import deploy_input
    from drivecompress.errors import BadInputError
    from drivecompress.export.onnx import export_onnx
    from drivecompress.share.dcz import decode_state
    from drivecompress.train.checkpoint import model_from, write_checkpoint

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInputError(f"{out}: --out must be a new or empty folder (it holds files that would be overwritten)")
    state, doc, seconds = decode_state(Path(archive))
    result: dict[str, Any] = {"archive": str(archive), "checkpoint": str(out), "decode_seconds": round(seconds, 3)}
    if doc.get("kind") == "layout" and template is None:
        write_checkpoint(out, state, doc)
        return result | {"onnx": None, "note": "a user-defined network: export it after "
                                               "drivecompress.load_model(out, template=<your model>)"}
    model = model_from(doc, state, Path(archive), template)
    d = as_data(data)
    tmp = out.with_name(f".{out.name}.unpacking")  # filled, then renamed: no half-unpacked DIR
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    exp = export_onnx(model, tmp / "model.onnx", deploy_input(d.test.x[:64]))
    write_checkpoint(tmp, state, doc)
    if out.exists():
        out.rmdir()
    tmp.replace(out)
    return result | {"onnx": str(out / "model.onnx"), "onnx_max_abs_diff": exp.max_abs_diff}

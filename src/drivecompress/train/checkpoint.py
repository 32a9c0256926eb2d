"""Checkpoints as ``model.safetensors`` + ``model.json``: weights without pickle, and what rebuilds the
(possibly pruned) architecture without running any code stored in a file.

Two kinds, told apart by ``model.json``:
- ``"spec"``: a network of the zoo, rebuilt from its JSON spec of every layer's width;
- ``"layout"``: any other ``nn.Module``. Its code is the user's (never stored); the file records the shape
  attributes of every layer (conv channels and groups, linear features, norm sizes) so that the user's own
  constructor, given as ``template``, is reshaped to the pruned widths before the weights load. A fingerprint
  (logits of a seeded input) is checked after loading, so a forward pass that depends on something the layout
  does not restore is refused instead of silently computing something else.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from drivecompress.errors import BadInputError
from drivecompress.models import build_model
from drivecompress.utils.io import atomic_write, atomic_write_json

WEIGHTS = "model.safetensors"
META = "model.json"
FORMAT_VERSION = 2

_SHAPE_ATTRS: tuple[tuple[type, tuple[str, ...]], ...] = (
    (nn.modules.conv._ConvNd, ("in_channels", "out_channels", "groups")),
    (nn.Linear, ("in_features", "out_features")),
    (nn.modules.batchnorm._NormBase, ("num_features",)),
    (nn.GroupNorm, ("num_groups", "num_channels")),
    (nn.LayerNorm, ("normalized_shape",)),
    (nn.PReLU, ("num_parameters",)),
)
Template = nn.Module | Callable[[], nn.Module]


def module_layout(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The shape attributes of every layer that has some (what channel pruning changes)."""
    out = {}
    for name, m in model.named_modules():
        for kind, attrs in _SHAPE_ATTRS:
            if isinstance(m, kind):
                out[name] = {"type": type(m).__name__,
                             **{a: list(v) if isinstance(v := getattr(m, a), tuple) else v for a in attrs}}
    return out


def _fingerprint_input(shape: list[int]) -> torch.Tensor:
    return torch.rand((2, *shape), generator=torch.Generator().manual_seed(1234))


@torch.no_grad()
def _fingerprint(model: nn.Module, shape: list[int]) -> list[float]:
    return model.eval()(_fingerprint_input(shape)).flatten()[:64].tolist()


def checkpoint_document(model: nn.Module, meta: dict[str, Any] | None = None,
                        input_shape: tuple[int, ...] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights and the JSON document that rebuild ``model`` (what ``save_checkpoint`` writes, and what a
    ``.dcz`` archive carries). A zoo model stores its spec; any other module its layout and a fingerprint
    (``input_shape`` (C, H, W) is then needed)."""
    model = model.cpu().eval()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    doc: dict[str, Any] = {"format_version": FORMAT_VERSION, **(meta or {})}
    if hasattr(model, "spec"):
        doc["spec"] = model.spec()
    else:
        if input_shape is None:
            raise ValueError("save_checkpoint: input_shape (C, H, W) is needed to save a user-defined module")
        cls = type(model)
        doc.update({"kind": "layout", "module_class": f"{cls.__module__}.{cls.__qualname__}",
                    "layout": module_layout(model), "fingerprint": _fingerprint(model, list(input_shape))})
    if input_shape is not None:
        doc["input_shape"] = list(input_shape)
    return state, doc


def weights_sha256(model: nn.Module) -> str:
    """sha256 over a module's tensors (names and bytes, in name order): the identity of a set of weights, used
    to check that a run resumes, or a recipe starts, from the model it claims."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def write_checkpoint(folder: str | Path, state: dict[str, torch.Tensor], doc: dict[str, Any]) -> Path:
    """Write weights and document atomically (weights first: ``model.json`` marks a complete checkpoint)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / WEIGHTS, lambda p: save_file(state, str(p)))
    atomic_write_json(folder / META, doc)
    return folder


def save_checkpoint(folder: str | Path, model: nn.Module, meta: dict[str, Any] | None = None,
                    input_shape: tuple[int, ...] | None = None) -> Path:
    """Write weights and metadata atomically. A zoo model stores its spec; any other module its layout and
    a fingerprint (``input_shape`` (C, H, W) is then needed)."""
    return write_checkpoint(folder, *checkpoint_document(model, meta, input_shape))


def read_meta(folder: str | Path) -> dict[str, Any]:
    """Read and check ``model.json``."""
    path = Path(folder) / META
    if not path.exists():
        raise BadInputError(f"{path}: checkpoint metadata not found (expected {META} + {WEIGHTS})")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or not (isinstance(doc.get("spec"), dict) or doc.get("kind") == "layout"):
        raise BadInputError(f"{path}: key 'spec' missing or not an object")
    return doc


def _read_weights(wpath: Path) -> dict[str, torch.Tensor]:
    if not wpath.exists():
        raise BadInputError(f"{wpath}: weights file not found")
    try:
        state = load_file(str(wpath), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise BadInputError(f"{wpath}: not a readable safetensors file ({exc})") from exc
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise BadInputError(f"{wpath}: tensor '{k}' holds NaN or Inf values")
    return state


def _reshape_to(model: nn.Module, layout: dict[str, Any], state: dict[str, torch.Tensor], where: Path) -> None:
    """Give the template's layers the saved widths (empty tensors of the saved shapes, then the attributes)."""
    mods = dict(model.named_modules())
    for name, attrs in layout.items():
        m = mods.get(name)
        if m is None or type(m).__name__ != attrs.get("type"):
            raise BadInputError(f"{where}: layer '{name}' ({attrs.get('type')}) is not in the given model "
                                f"(is it the same architecture?)")
        for a, v in attrs.items():
            if a != "type":
                setattr(m, a, tuple(v) if isinstance(v, list) else v)
    for full, tensor in state.items():
        mod_name, _, leaf = full.rpartition(".")
        m = mods.get(mod_name)
        if m is None:
            continue
        if leaf in m._parameters and m._parameters[leaf] is not None:
            if m._parameters[leaf].shape != tensor.shape:
                m._parameters[leaf] = nn.Parameter(torch.empty_like(tensor))
        elif leaf in m._buffers and m._buffers[leaf] is not None and m._buffers[leaf].shape != tensor.shape:
            m._buffers[leaf] = torch.empty_like(tensor)


def model_from(doc: dict[str, Any], state: dict[str, torch.Tensor], where: Path,
               template: Template | None = None) -> nn.Module:
    """Rebuild the model a checkpoint document describes and load ``state`` into it, checking every tensor's
    presence and shape (and, for a user-defined network, the fingerprint). ``where`` names the source in errors."""
    if doc.get("kind") == "layout":
        return _load_layout(where, doc, state, template)
    try:
        model = build_model(doc["spec"])
    except BadInputError as exc:
        raise BadInputError(f"{where}: {exc}") from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise BadInputError(
            f"{where}: weights do not match the spec in {META} "
            f"(missing: {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected: {unexpected[:3]})"
        )
    for k, v in expected.items():
        if state[k].shape != v.shape:
            raise BadInputError(f"{where}: tensor '{k}' has shape {tuple(state[k].shape)}, spec says {tuple(v.shape)}")
    model.load_state_dict(state)
    return model.eval()


def _load_layout(where: Path, meta: dict[str, Any], state: dict[str, torch.Tensor],
                 template: Template | None) -> nn.Module:
    if template is None:
        raise BadInputError(
            f"{where}: holds a user-defined network ({meta.get('module_class')}); its code is not stored in the "
            "file, so load it with drivecompress.load_model(folder, template=<your model or its constructor>)")
    model = copy.deepcopy(template) if isinstance(template, nn.Module) else template()
    _reshape_to(model, meta.get("layout", {}), state, where)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise BadInputError(f"{where}: weights do not fit the given model ({first})") from exc
    got = _fingerprint(model, meta["input_shape"])
    want = meta.get("fingerprint", [])
    if len(got) != len(want) or max((abs(a - b) for a, b in zip(got, want, strict=True)), default=0.0) > 1e-3:
        raise BadInputError(f"{where}: the rebuilt model does not compute what was saved (fingerprint differs): "
                            "its forward depends on more than the layer widths this format restores")
    return model


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu",
                    template: Template | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model and load the weights, checking every tensor's presence, shape and finiteness.

    ``template`` (a module or a zero-argument constructor) is needed for a user-defined network."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInputError(f"{folder}: not a checkpoint folder")
    meta = read_meta(folder)
    if meta.get("kind") == "layout" and template is None:
        _load_layout(folder, meta, {}, None)  # raises the "give a template" error before reading weights
    state = _read_weights(folder / WEIGHTS)
    return model_from(meta, state, folder / (META if meta.get("kind") == "layout" else WEIGHTS),
                      template).to(device).eval(), meta

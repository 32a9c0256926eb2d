"""Checkpoints as ``model.safetensors`` + ``model.json``: weights without pickle, the spec to rebuild the
(possibly pruned) architecture, and the metadata a model card needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from drivecompress.data.classes import CLASS_NAMES
from drivecompress.errors import BadInputError
from drivecompress.models import build_model, spec_of
from drivecompress.utils.io import atomic_write, atomic_write_json

WEIGHTS = "model.safetensors"
META = "model.json"
FORMAT_VERSION = 1


def save_checkpoint(folder: str | Path, model: nn.Module, meta: dict[str, Any] | None = None) -> Path:
    """Write weights and metadata atomically; the spec is read from the live model so pruning is captured."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    doc = {
        "format_version": FORMAT_VERSION,
        "spec": spec_of(model),
        "class_names": list(CLASS_NAMES),
        **(meta or {}),
    }
    atomic_write(folder / WEIGHTS, lambda p: save_file(state, str(p)))
    atomic_write_json(folder / META, doc)
    return folder


def read_meta(folder: str | Path) -> dict[str, Any]:
    """Read and check ``model.json``."""
    path = Path(folder) / META
    if not path.exists():
        raise BadInputError(f"{path}: checkpoint metadata not found (expected {META} + {WEIGHTS})")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("spec"), dict):
        raise BadInputError(f"{path}: key 'spec' missing or not an object")
    return doc


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from its spec and load the weights, checking every tensor's presence and shape."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInputError(f"{folder}: not a checkpoint folder")
    meta = read_meta(folder)
    model = build_model(meta["spec"])
    wpath = folder / WEIGHTS
    if not wpath.exists():
        raise BadInputError(f"{wpath}: weights file not found")
    try:
        state = load_file(str(wpath), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise BadInputError(f"{wpath}: not a readable safetensors file ({exc})") from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise BadInputError(
            f"{wpath}: weights do not match the spec in {META} "
            f"(missing: {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected: {unexpected[:3]})"
        )
    for k, v in expected.items():
        if state[k].shape != v.shape:
            raise BadInputError(f"{wpath}: tensor '{k}' has shape {tuple(state[k].shape)}, spec says {tuple(v.shape)}")
    model.load_state_dict(state)
    return model.to(device).eval(), meta

"""Decorator registry of model families (timm-style): ``@register_model("resnet")``.

A family is a class with ``default_spec(width_mult, num_classes)`` (a JSON-able dict recording every layer's
width), a constructor taking that spec, and ``spec()`` that reads the widths back from the live layers —
so a model whose channels were physically removed saves and reloads from its spec alone.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Protocol

import torch
import torch.nn as nn

from drivecompress.errors import BadInputError

_REGISTRY: dict[str, type] = {}


class SpecModel(Protocol):
    """What a registered family provides."""

    def spec(self) -> dict[str, Any]: ...


def register_model(name: str):
    """Register a model family class under ``name`` (the spec's ``arch``)."""

    def deco(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"model family '{name}' registered twice")
        cls.arch = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_models() -> list[str]:
    """Names of the registered families."""
    return sorted(_REGISTRY)


def default_spec(arch: str, width_mult: float = 1.0, num_classes: int = 43, **kw: Any) -> dict[str, Any]:
    """The family's default spec scaled by ``width_mult``."""
    if arch not in _REGISTRY:
        raise BadInputError(f"unknown model '{arch}' (available: {', '.join(available_models())})")
    return _REGISTRY[arch].default_spec(width_mult=width_mult, num_classes=num_classes, **kw)


def build_model(spec: dict[str, Any], seed: int | None = None) -> nn.Module:
    """Build a model from its spec; unknown families or malformed specs raise BadInputError. ``seed``: initial
    weights from that seed, leaving the global generator as it was (the same network whatever the process drew
    before: the search's proxy and its latency reference)."""
    arch = spec.get("arch") if isinstance(spec, dict) else None
    if arch not in _REGISTRY:
        raise BadInputError(f"model spec: unknown arch {arch!r} (available: {', '.join(available_models())})")
    big = _too_large(spec, "")
    if big:  # before allocating: a width of 1e9 asked for 108 GB before torch refused
        raise BadInputError(f"model spec for '{arch}': {big[0]} = {big[1]:,} is larger than any width this "
                            f"loader builds ({MAX_WIDTH:,})")
    try:
        with torch.random.fork_rng() if seed is not None else contextlib.nullcontext():
            if seed is not None:
                torch.manual_seed(seed)
            model = _REGISTRY[arch](copy.deepcopy(spec))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: torch on negative widths
        raise BadInputError(f"model spec for '{arch}' is malformed: {str(exc).splitlines()[0]}") from exc
    unknown = _unknown_keys(spec, model.spec(), "") - {"in_channels"}
    if unknown:  # otherwise a misspelt optional key ('input_nrom') is silently dropped
        raise BadInputError(f"model spec for '{arch}': unknown key(s) {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(sorted(model.spec()))})")
    return model


MAX_WIDTH = 1 << 16  # channels, features or classes of one layer


def _too_large(spec: Any, where: str) -> tuple[str, int] | None:
    """The first integer of the spec (nested dicts and lists) above ``MAX_WIDTH``, with its key path."""
    items = spec.items() if isinstance(spec, dict) else enumerate(spec) if isinstance(spec, list) else ()
    for k, v in items:
        if isinstance(v, int | float) and not isinstance(v, bool) and v > MAX_WIDTH:
            return f"{where}{k}", int(v)
        found = _too_large(v, f"{where}{k}.") if isinstance(v, dict | list) else None
        if found:
            return found
    return None


def _unknown_keys(given: Any, known: Any, where: str) -> set[str]:
    """Keys of ``given`` (nested dicts and lists of dicts) that the built model's own spec does not have."""
    if isinstance(given, dict) and isinstance(known, dict):
        out = {f"{where}{k}" for k in given if k not in known}
        for k in given.keys() & known.keys():
            out |= _unknown_keys(given[k], known[k], f"{where}{k}.")
        return out
    if isinstance(given, list) and isinstance(known, list) and len(given) == len(known):
        pairs = enumerate(zip(given, known, strict=True))
        return set().union(*(_unknown_keys(g, k, f"{where}{i}.") for i, (g, k) in pairs))
    return set()


def spec_of(model: nn.Module) -> dict[str, Any]:
    """Read the spec back from a (possibly pruned) live model."""
    if not hasattr(model, "spec"):
        raise TypeError(f"{type(model).__name__} is not a registered drivecompress model")
    return model.spec()


def round_width(w: float, multiple: int = 8) -> int:
    """Round a scaled width to a multiple (kernels run faster on aligned channel counts)."""
    return max(multiple, round(w / multiple) * multiple)

"""Recipes: YAML files of ordered, typed steps plus budgets for the safety gate.

Every error names the file, the step and the key: an unknown step type, an unknown key, a wrong type.
``--set steps.1.calibration=entropy`` overrides are parsed as YAML scalars and re-validated.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drivecompress.core import StepConfig, lookup, step_types
from drivecompress.errors import BadInputError


class Budgets(BaseModel):
    """Limits the final model must meet, else the run exits 3 and the model is kept as rejected. The accuracy
    budgets are judged on paired per-image evidence (see ``pipeline/gate.py`` for the exact rules)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_accuracy_drop: float | None = Field(None, description="points of top-1 accuracy")
    max_safety_recall_drop: float | None = Field(None, description="points of recall, any safety-critical class")
    max_latency_ms: float | None = Field(None, description="batch-1 p50, one thread")
    max_size_bytes: int | None = None
    max_corruption_accuracy_drop: float | None = Field(None, description="points; needs robustness metrics")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="one-sided confidence of the non-inferiority bounds")
    significance: float = Field(0.05, gt=0, lt=0.5, description="Holm-adjusted McNemar level for a systematic loss")


class Targets(BaseModel):
    """Goals reported against (with the shortfall when missed); unlike budgets they do not refuse a model."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_latency_speedup: float | None = Field(None, description="baseline p50 / final p50, batch 1, 1 thread")
    min_size_reduction: float | None = Field(None, description="baseline size / final size on disk")
    max_accuracy_drop: float | None = Field(None, description="points")


class Evaluation(BaseModel):
    """How the runner measures after each step."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    test_subset: int | None = None
    latency_runs: int = 500
    throughput_seconds: float = 3.0
    robustness: bool = False
    robustness_images: int = Field(300, ge=1, description="seeded test subset for corruptions")
    attack_images: int = Field(128, ge=1, description="seeded test subset for FGSM/PGD")


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "recipe"
    description: str = ""
    seed: int = 0
    budgets: Budgets = Budgets()
    targets: Targets = Targets()
    evaluation: Evaluation = Evaluation()
    steps: list[tuple[str, StepConfig]] = Field(default_factory=list)

    def resolved(self) -> dict[str, Any]:
        """The recipe as plain data, every default filled in (written to the run folder)."""
        body = self.model_dump(exclude={"steps"})
        body["steps"] = [{"type": t, **c.model_dump()} for t, c in self.steps]
        return body


def _fmt_error(where: str, exc: ValidationError) -> str:
    e = exc.errors()[0]
    key = ".".join(str(p) for p in e["loc"]) or "(top level)"
    if e["type"] == "extra_forbidden":
        return f"{where}: unknown key '{key}'"
    return f"{where}: key '{key}': {e['msg']} (got {e.get('input')!r})"


def _apply_override(doc: dict[str, Any], assignment: str, source: str) -> None:
    if "=" not in assignment:
        raise BadInputError(f"--set {assignment!r}: expected KEY=VALUE, e.g. steps.0.calibration=entropy")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node: Any = doc
    for i, p in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not p.isdigit() or int(p) >= len(node):
                raise BadInputError(f"--set {key}: '{'.'.join(parts[: i + 1])}' is not a step index of {source}")
            node = node[int(p)]
        else:
            node = node.setdefault(p, {})
    if not isinstance(node, dict):
        raise BadInputError(f"--set {key}: cannot set a key there")
    node[parts[-1]] = yaml.safe_load(raw)


def parse_recipe(doc: Any, source: str = "recipe", overrides: list[str] | None = None) -> Recipe:
    """Validate a recipe document (already loaded YAML) and apply ``--set`` overrides."""
    if not isinstance(doc, dict):
        raise BadInputError(f"{source}: a recipe is a mapping with a 'steps' list")
    doc = copy.deepcopy(doc)
    for ov in overrides or []:
        _apply_override(doc, ov, source)
    raw_steps = doc.pop("steps", None)
    if not isinstance(raw_steps, list) or not raw_steps:
        raise BadInputError(f"{source}: 'steps' must be a non-empty list")
    steps = []
    for i, st in enumerate(raw_steps):
        if not isinstance(st, dict) or "type" not in st:
            raise BadInputError(f"{source}: step {i}: each step needs a 'type' (one of {', '.join(step_types())})")
        st = dict(st)
        kind = st.pop("type")
        if kind not in step_types():
            raise BadInputError(f"{source}: step {i}: unknown step type '{kind}' (known: {', '.join(step_types())})")
        cls, _ = lookup(kind)
        try:
            steps.append((kind, cls(**st)))
        except ValidationError as exc:
            raise BadInputError(_fmt_error(f"{source}: step {i} ({kind})", exc)) from exc
    try:
        return Recipe(**doc, steps=steps)
    except ValidationError as exc:
        raise BadInputError(_fmt_error(source, exc)) from exc


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe YAML file (safe loader only) and validate it."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: recipe file not found")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise BadInputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    return parse_recipe(doc, str(path), overrides)

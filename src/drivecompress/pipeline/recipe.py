"""Recipes: YAML files of ordered, typed steps plus budgets for the safety gate.

Every error names the file, the step and the key: an unknown step type, an unknown key, a wrong type.
``--set steps.1.calibration=entropy`` overrides are parsed as YAML scalars and re-validated.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from drivecompress.core import StepConfig, lookup, step_types
from drivecompress.errors import BadInputError


class Budgets(BaseModel):
    """Limits the final model must meet, else the run exits 3 and the model is kept as rejected. The accuracy
    budgets are judged on paired per-image evidence, counted in physical signs where known (the rules:
    ``pipeline/gate.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_accuracy_drop: float | None = Field(None, ge=0, le=100, allow_inf_nan=False,
                                            description="points of top-1 accuracy, pooled over all test images")
    max_safety_recall_drop: float | None = Field(
        None, ge=0, le=100, allow_inf_nan=False,
        description="points of recall: pooled over the safety-critical images, and each class's allowance in the "
        "per-class test (every class is tested; safety-critical ones refuse, the others warn)")
    max_latency_ms: float | None = Field(None, gt=0, allow_inf_nan=False, description="batch-1 p50, one thread")
    max_size_bytes: int | None = Field(None, ge=1)
    max_corruption_accuracy_drop: float | None = Field(None, ge=0, le=100, allow_inf_nan=False,
                                                       description="points; needs robustness metrics")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="one-sided confidence of the non-inferiority bounds")
    significance: float = Field(0.05, gt=0, lt=0.5, description="Holm-adjusted level of the per-class test "
                                "(family-wise error over all classes)")
    gate_all_classes: bool = Field(False, strict=True, description="a significant loss on a class outside the "
                                   "safety-critical set refuses too (default: it is reported as a warning)")


class Targets(BaseModel):
    """Goals reported against (with the shortfall when missed); unlike budgets they do not refuse a model."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_latency_speedup: float | None = Field(None, gt=0, allow_inf_nan=False,
                                              description="baseline p50 / final p50, batch 1, 1 thread")
    min_size_reduction: float | None = Field(None, gt=0, allow_inf_nan=False,
                                             description="baseline size / final size on disk")
    max_accuracy_drop: float | None = Field(None, ge=0, le=100, allow_inf_nan=False, description="points")


class Evaluation(BaseModel):
    """How the runner measures after each step."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    test_subset: int | None = Field(None, ge=1, description="seeded subset of the test set (default: all)")
    latency_runs: int = Field(500, ge=1)
    throughput_seconds: float = Field(3.0, gt=0)
    robustness: bool = False
    robustness_images: int = Field(300, ge=1, description="seeded test subset for corruptions")
    attack_images: int = Field(128, ge=1, description="seeded test subset for FGSM/PGD")


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "recipe"
    description: str = ""
    seed: int = 0
    teacher: str | list[str] | None = Field(
        None, description="checkpoint folder (model.json + model.safetensors) or .onnx file (logits from ONNX "
        "Runtime) of the distillation teacher of every step that distills (default: the input model), e.g. a "
        "larger or unsmoothed model; a list teaches as one ensemble (the mean of their logits). The gate still "
        "compares with the input model")
    budgets: Budgets = Budgets()
    targets: Targets = Targets()
    evaluation: Evaluation = Evaluation()
    steps: list[tuple[str, StepConfig]] = Field(default_factory=list)

    @field_validator("teacher")
    @classmethod
    def _teachers(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and not v:
            raise ValueError("an empty list; give one or more checkpoint folders or .onnx files, or leave it out")
        return v

    def resolved(self) -> dict[str, Any]:
        """The recipe as plain data, every default filled in (written to the run folder)."""
        body = self.model_dump(exclude={"steps"})
        body["steps"] = [{"type": t, **c.model_dump()} for t, c in self.steps]
        return body


def _fmt_error(where: str, exc: ValidationError) -> str:
    e = exc.errors()[0]
    key = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        return f"{where}: unknown key '{key}'"
    if not key:  # a rule across keys (e.g. mixup needs distill): its message names them; the input is all keys
        return f"{where}: {e['msg'].removeprefix('Value error, ')}"
    return f"{where}: key '{key}': {e['msg'].removeprefix('Value error, ')} (got {e.get('input')!r})"


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
    node[parts[-1]] = load_yaml(raw, f"--set {key}")


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


MAX_RECIPE_BYTES = 1_000_000


class _NoAliasLoader(yaml.SafeLoader):
    """The safe loader without anchors and aliases: a recipe has no use for them, and nested aliases let half a
    kilobyte expand to gigabytes (measured: 1.3 GB, one level more aborted the process)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """A key given twice is an error (YAML's default keeps the last silently: a second ``steps:`` would
        replace the first)."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a recipe",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML text with the safe, alias-free loader; one-line error naming ``source``."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)
    except yaml.YAMLError as exc:
        raise BadInputError(f"{source}: not valid YAML ({' '.join(str(exc).split())[:200]})") from exc


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe YAML file (safe loader, no aliases, at most 1 MB, UTF-8) and validate it."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: recipe file not found")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise BadInputError(f"{path}: {path.stat().st_size:,} bytes; a recipe is at most {MAX_RECIPE_BYTES:,}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    return parse_recipe(load_yaml(text, str(path)), str(path), overrides)

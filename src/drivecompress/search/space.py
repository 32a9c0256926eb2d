"""The search space: which networks a trial can sample, and the check that an enqueued network is one of them.

Two families (ResNet basic blocks, MobileNetV2 inverted residuals) with per-stage widths in multiples of 16 (the
CPU's channel blocks), depths, kernel sizes, expansion ratios and where the resolution first drops.
"""

from __future__ import annotations

from typing import Any, Literal

from drivecompress.errors import BadInputError

Family = Literal["resnet", "mobilenetv2"]
FAMILIES: tuple[str, ...] = ("resnet", "mobilenetv2")


def sample_spec(trial: Any, num_classes: int, input_norm: dict[str, Any] | None, quick: bool,
                families: tuple[str, ...] | list[str] = FAMILIES) -> dict[str, Any]:
    """A network from the trial's choices: the family (ResNet basic blocks or MobileNetV2 inverted residuals),
    the stem, where the resolution first drops (for the ResNet also a block at full resolution in front of
    it), per-stage widths in multiples of 16 and depths; for the
    MobileNet family also the expansion ratio and depthwise kernel size (3 or 5) of each stage. ``families``
    narrows the space to some of the families."""
    widths = ([16, 32], [16, 32], [32, 48]) if quick else ([16, 32, 48], [32, 48, 64, 96], [48, 64, 96, 128])
    family = trial.suggest_categorical("family", list(families))
    stem = trial.suggest_categorical("stem", [16] if quick else [16, 32])
    first_stride = trial.suggest_categorical("first_stride", [1, 2])
    if family == "mobilenetv2":  # own parameter names: their ranges differ from the ResNet's
        spec = _mobilenet_spec(trial, stem, first_stride, widths, quick)
    else:
        stages, cin = [], stem
        # A block at full resolution before the first drop: measured the largest gain for small signs
        # (experiments/student-fullres.yaml: +2.0 points under 14 px for 1.3x the latency of the same net without).
        if trial.suggest_categorical("full_res_block", [False, True]):
            stages.append({"stride": 1, "out": stem, "mids": [stem], "projection": False})
        for i, choices in enumerate(widths):
            w = trial.suggest_categorical(f"width{i}", choices)
            depth = trial.suggest_int(f"depth{i}", 1, 1 if quick else 2)
            stride = first_stride if i == 0 else 2
            stages.append({"stride": stride, "out": w, "mids": [w] * depth, "projection": stride != 1 or cin != w})
            cin = w
        spec = {"arch": "resnet", "stem": stem, "stages": stages}
    spec["num_classes"] = num_classes
    if input_norm:
        spec["input_norm"] = input_norm
    return spec


def check_enqueued(enqueue: list[dict[str, Any]], quick: bool, families: tuple[str, ...] | list[str] = FAMILIES
                   ) -> None:
    """Each enqueued network must be one the space can sample, with no parameter it does not use: found here,
    not as a crash inside the first trial."""
    import optuna

    for params in enqueue:
        if "family" in params and params["family"] not in families:  # a missing one: FixedTrial names it
            raise BadInputError(f"enqueue {params}: family {params.get('family')!r} is not searched (families: "
                                f"{', '.join(families)})")
        trial = optuna.trial.FixedTrial(params)
        try:
            sample_spec(trial, 2, None, quick, families)
        except ValueError as exc:
            raise BadInputError(f"enqueue {params}: not in the search space ({exc})") from exc
        unused = sorted(set(params) - set(trial.params))
        if unused:
            raise BadInputError(f"enqueue {params}: parameters this network does not use: {', '.join(unused)}")


def _mobilenet_spec(trial: Any, stem: int, first_stride: int, widths: tuple[list[int], ...],
                    quick: bool) -> dict[str, Any]:
    blocks, cin = [], stem
    for i, choices in enumerate(widths):
        w = trial.suggest_categorical(f"mb_width{i}", choices)
        depth = trial.suggest_int(f"mb_depth{i}", 1, 1 if quick else 3)
        expand = trial.suggest_categorical(f"mb_expand{i}", [2] if quick else [2, 4, 6])
        kernel = trial.suggest_categorical(f"mb_kernel{i}", [3, 5])
        for j in range(depth):
            stride = (first_stride if i == 0 else 2) if j == 0 else 1
            blocks.append({"hidden": cin * expand, "out": w, "stride": stride, "expand": True, "kernel": kernel})
            cin = w
    head = trial.suggest_categorical("mb_head", [64] if quick else [128, 256])
    return {"arch": "mobilenetv2", "stem": stem, "blocks": blocks, "head": head}

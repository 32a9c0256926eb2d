"""The search's int8 latency: each network timed against a fixed reference int8 graph in the same rounds.

On the 2-core AVX2 VM one int8 graph's batch-1 p50 moved by 30-50% within minutes (trial 80 of a search timed
0.19 ms, then 0.29-0.33 ms a few minutes later; the teacher's fp32 graph 2.67 ms in one search, 3.96 ms in
the next). A single timing then decides little: re-screened at 10% over the budget, a network within it was
pruned (README, "Latency screen"). The *ratio* of a graph to another int8 graph of similar size, timed in
interleaved rounds, moved by 8-17% over the same minutes (to the teacher's fp32 graph: 25-35%; fp32 and int8
kernels do not slow down alike). So a network's latency is its median per-round ratio to the reference times
the reference's quiet latency: the lowest round median this worker has seen of it (the machine's speed when
nothing slowed it).
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from drivecompress.data.api import Data
from drivecompress.evaluate.latency import side_by_side
from drivecompress.models import build_model
from drivecompress.quant.ptq import PTQConfig
from drivecompress.quant.quantize import quantize


def reference_ratio(sbs: dict[str, dict[str, Any]], key: str, ref: str = "reference") -> float:
    """Median per-round ratio of ``key`` to the reference in one side-by-side measurement (``side_by_side``):
    the figure that survives the machine changing speed between rounds."""
    mine, base = sbs[key]["round_medians_ms"], sbs[ref]["round_medians_ms"]
    return statistics.median(a / b for a, b in zip(mine, base, strict=True))


def reference_spec(num_classes: int, input_norm: dict[str, Any] | None = None) -> dict[str, Any]:
    """The shipped student's layout (recipes/student.yaml: stem 16, then 48 / 64 / 96 channels, one basic block
    each, stride 2 at every stage): inside the search space and about as fast as the networks near a 10x
    budget, so that both slow down alike when the machine does."""
    stages = [{"stride": 2, "out": w, "mids": [w], "projection": True} for w in (48, 64, 96)]
    spec: dict[str, Any] = {"arch": "resnet", "stem": 16, "stages": stages, "num_classes": num_classes}
    if input_norm:
        spec["input_norm"] = input_norm
    return spec


class ReferenceMeter:
    """Times int8 graphs against the reference; one per worker (the quiet latency is this machine's)."""

    ROUNDS = 5

    def __init__(self, data: Data, runs: int, folder: Path, input_norm: dict[str, Any] | None = None,
                 seed: int = 0) -> None:
        self.data, self.runs = data, runs
        self.path = Path(folder) / "latency_reference.onnx"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # the same reference graph in every worker and every call
        model = build_model(reference_spec(data.num_classes, input_norm), seed=seed).eval()
        # workers sharing the folder each write their own file and move it into place (same graph, whole file)
        fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=self.path.parent)
        os.close(fd)
        try:
            quantize(model, data, Path(tmp), PTQConfig(calibration_images=32), seed=seed + 1)
            os.replace(tmp, self.path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        alone = side_by_side({"reference": self.path}, data.input_shape, runs=2 * runs, rounds=2 * self.ROUNDS,
                             warmup=30)["reference"]
        self.quiet_ms = min(alone["round_medians_ms"])

    def __call__(self, path: Path, rounds: int | None = None) -> dict[str, float]:
        """``ms``: the graph's latency on the quiet machine (ratio x the reference's quiet latency);
        ``raw_ms``: its own p50 in this measurement; ``ratio``: median per-round ratio to the reference."""
        sbs = side_by_side({"int8": path, "reference": self.path}, self.data.input_shape, runs=self.runs,
                           rounds=rounds or self.ROUNDS, warmup=30)
        ratio = reference_ratio(sbs, "int8")
        self.quiet_ms = min(self.quiet_ms, *sbs["reference"]["round_medians_ms"])
        return {"ms": ratio * self.quiet_ms, "raw_ms": float(sbs["int8"]["latency_ms_p50"]), "ratio": ratio,
                "reference_quiet_ms": self.quiet_ms}


def untrained_latency(spec: dict[str, Any], data: Data, meter: ReferenceMeter, calibration_images: int = 32,
                      seed: int = 1, keep: Path | None = None, confirm_over: float | None = None) -> dict[str, float]:
    """The network ``spec`` before any training, quantized and timed by ``meter`` as a trial times its trained
    network (an int8 graph's latency depends on the graph, not on its weights: within 4% side by side, README);
    public so that benchmarks/bench_screen.py can check it. ``keep``: also save the int8 graph there.

    ``confirm_over``: a first timing above this is timed again in twice the rounds and the lower figure kept
    (``first_ms`` is the first), so that one slow spell cannot prune a network within budget: one screen in 39
    was 35% over its trained latency on the AVX2 VM (README, "Reference graph"); a network truly over the budget
    costs one more second."""
    with tempfile.TemporaryDirectory(prefix="drivecompress-screen-") as tmp:
        int8 = Path(tmp) / "int8.onnx"
        quantize(build_model(spec).eval(), data, int8,
                 PTQConfig(calibration_images=min(calibration_images, 32)), seed=seed)
        lat = meter(int8)
        lat["first_ms"] = lat["ms"]
        if confirm_over is not None and lat["ms"] > confirm_over:
            again = meter(int8, rounds=2 * meter.ROUNDS)
            if again["ms"] < lat["ms"]:
                lat = {**again, "first_ms": lat["ms"]}
        if keep is not None:
            keep.write_bytes(int8.read_bytes())
    return lat

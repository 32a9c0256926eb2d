"""Which student layouts are fast enough on this CPU? Int8 latency of candidate ResNet layouts, side by side.

    python benchmarks/bench_layouts.py [--model baseline] [--runs 1000] [--rounds 5] [--out runs/bench_layouts]

Speed on a small CNN at batch 1 is not proportional to MACs (per-operator cost and the quantize/dequantize
nodes dominate), so a student for issue #16's 6x / 8x has to be chosen by measuring, not by counting. Each
candidate is built untrained (latency and size do not depend on the weight values), exported, quantized with
the project's PTQ (calibrated on real training images) and timed against the baseline's fp32 ONNX in
interleaved rounds, one thread, nothing else should be running. Prints MACs, parameters, int8 size and both
ratios against the baseline; writes results.json into --out.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

from _common import print_table, save_results

from drivecompress.data.api import Data
from drivecompress.data.transforms import deploy_input
from drivecompress.evaluate.complexity import count_macs, count_params
from drivecompress.evaluate.latency import side_by_side
from drivecompress.evaluate.loading import load_model_arg
from drivecompress.export.onnx import export_onnx
from drivecompress.models.registry import build_model
from drivecompress.quant.ptq import PTQConfig
from drivecompress.quant.quantize import quantize


def _stage(stride: int, out: int, blocks: int = 1) -> dict:
    return {"stride": stride, "out": out, "mids": [out] * blocks, "projection": stride != 1}


# name -> (stem, stages); "drop" = the resolution halves right after the stem (recipes/student.yaml's layout)
CANDIDATES: dict[str, tuple[int, list[dict]]] = {
    "student.yaml: 16 / 48-64-96, drop": (16, [_stage(2, 48), _stage(2, 64), _stage(2, 96)]),
    "16 / 16 full res, 48-64-96": (16, [_stage(1, 16), _stage(2, 48), _stage(2, 64), _stage(2, 96)]),
    "24 / 24 full res, 48-64-96": (24, [_stage(1, 24), _stage(2, 48), _stage(2, 64), _stage(2, 96)]),
    "16 / 16 full res, 64-80-112": (16, [_stage(1, 16), _stage(2, 64), _stage(2, 80), _stage(2, 112)]),
    "16 / 16 full res, 48x2-64-96": (16, [_stage(1, 16), _stage(2, 48, 2), _stage(2, 64), _stage(2, 96)]),
    "16 / 64-80-112, drop": (16, [_stage(2, 64), _stage(2, 80), _stage(2, 112)]),
    "16 / 48x2-64x2-96, drop": (16, [_stage(2, 48, 2), _stage(2, 64, 2), _stage(2, 96)]),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="baseline", help="the reference model (default: the shipped baseline)")
    ap.add_argument("--data")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_layouts"))
    ap.add_argument("--runs", type=int, default=1000, help="batch-1 calls per model, over all rounds")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    data = Data.from_npz(a.data)
    loaded = load_model_arg(a.model)
    if loaded.module is None:
        print(f"bench_layouts: {a.model}: needs a PyTorch model as the reference", file=sys.stderr)
        return 2
    norm = loaded.module.spec().get("input_norm") if hasattr(loaded.module, "spec") else None
    a.out.mkdir(parents=True, exist_ok=True)
    example = deploy_input(data.splits.train.head(32).x)
    paths = {"baseline fp32": export_onnx(loaded.module, a.out / "baseline.onnx", example).path}
    info: dict[str, dict] = {"baseline fp32": {"macs": count_macs(loaded.module, data.input_shape),
                                                "params": count_params(loaded.module)}}
    for name, (stem, stages) in CANDIDATES.items():
        spec = {"arch": "resnet", "stem": stem, "stages": copy.deepcopy(stages), "num_classes": data.num_classes}
        if norm:
            spec["input_norm"] = norm
        model = build_model(spec).eval()
        slug = "".join(c if c.isalnum() else "_" for c in name)
        paths[name] = a.out / f"{slug}.int8.onnx"
        quantize(model, data, paths[name], PTQConfig(calibration_images=256), seed=1)
        info[name] = {"macs": count_macs(model, data.input_shape), "params": count_params(model), "spec": spec}
    speed = side_by_side(paths, data.input_shape, runs=a.runs, rounds=a.rounds)
    base_ms = speed["baseline fp32"]["latency_ms_p50"]
    base_size = paths["baseline fp32"].stat().st_size
    rows, cells = [], []
    for name, path in paths.items():
        size = path.stat().st_size
        row = {"name": name, **info[name], "size_bytes": size, **speed[name],
               "speedup": base_ms / speed[name]["latency_ms_p50"], "smaller": base_size / size}
        rows.append(row)
        cells.append([name, f"{row['macs'] / 1e6:.1f} M", f"{row['params']:,}", f"{size:,}",
                      f"{row['latency_ms_p50']:.3f}", f"{row['speedup']:.2f}x", f"{row['smaller']:.2f}x"])
    save_results(a.out, rows)
    print_table("Candidate student layouts, int8 (PTQ) vs the baseline's fp32 ONNX, batch 1, one thread",
                ["layout", "MACs", "params", "bytes", "p50 ms", "faster", "smaller"], cells)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

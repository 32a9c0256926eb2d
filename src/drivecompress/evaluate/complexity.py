"""Parameters, MACs (from torch.utils.flop_counter, which counts 2 FLOPs per multiply-accumulate) and size."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (convolutions and linear layers); ``input_shape``
    is (C, H, W)."""
    model = model.eval().cpu()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros((1, *input_shape[-3:])))
    return int(counter.get_total_flops() // 2)


def size_on_disk(path: str | Path) -> int:
    """Bytes of a file, or of all files in a folder (a checkpoint)."""
    p = Path(path)
    if p.is_dir():
        return int(sum(f.stat().st_size for f in p.iterdir() if f.is_file()))
    return int(p.stat().st_size)


def onnx_params(path: str | Path) -> int:
    """Number of stored weight elements in an ONNX file (initializers), for models with no torch twin."""
    model = onnx.load(str(path), load_external_data=False)
    total = 0
    for init in model.graph.initializer:
        n = 1
        for d in init.dims:
            n *= d
        if len(init.dims) > 0:
            total += n
    return int(total)


def onnx_macs(path: str | Path) -> int | None:
    """Batch-1 multiply-accumulates of an ONNX model's Conv / Gemm / MatMul nodes (float, QDQ or QLinear),
    from the graph's inferred shapes: a user's ONNX model, or a pruned one with no torch twin at hand, gets the
    same MACs figure as a checkpoint. None when a counted node's shapes cannot be inferred (ONNX shape inference
    stops at ONNX Runtime's contrib operators, e.g. QLinearAdd in a QOperator-format residual network)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    g = model.graph
    shapes: dict[str, list[int | None]] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for init in g.initializer:
        shapes[init.name] = list(init.dims)

    def dims(name: str) -> list[int | None] | None:
        return shapes.get(name)

    weight_input = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "Gemm": 1, "MatMul": 1, "MatMulInteger": 1,
                    "QLinearMatMul": 3, "QGemm": 3}
    total = 0
    for node in g.node:
        if node.op_type not in weight_input:
            continue
        w, out = dims(node.input[weight_input[node.op_type]]), dims(node.output[0])
        if not w or any(d is None for d in w):
            return None
        if node.op_type in ("Gemm", "QGemm"):  # a 2-D weight, one row of A per image: K * N
            total += int(np.prod(w))
            continue
        if not out or any(d is None for d in out[1:]):
            return None
        if "Conv" in node.op_type:  # per output value: Cin/groups * kh * kw
            total += int(np.prod(out[1:])) * int(np.prod(w[1:]))
        else:  # MatMul: per output value, the inner dimension K of a [.., K, N] weight
            total += int(np.prod(out[1:])) * int(w[-2] if len(w) > 1 else w[0])
    return int(total)


def zipped_size(data: bytes) -> int:
    """Deflate-compressed size: what sparse weights save when the file is shipped compressed."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("w", data)
    return len(buf.getvalue())

"""Parameters, MACs (from torch.utils.flop_counter, which counts 2 FLOPs per multiply-accumulate) and size."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

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


def zipped_size(data: bytes) -> int:
    """Deflate-compressed size: what sparse weights save when the file is shipped compressed."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("w", data)
    return len(buf.getvalue())

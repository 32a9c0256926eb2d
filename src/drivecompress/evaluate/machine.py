"""What a benchmark ran on: CPU model, the instruction-set flags that decide int8/bf16 speed, versions."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from typing import Any

INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
                     "amx_bf16", "asimd", "asimddp")


def int8_saturates() -> bool:
    """True on an x86 CPU without VNNI: ORT's uint8 x int8 kernels then add pairs of products in int16
    (``vpmaddubsw``), which saturates for large activations times large weights. 7-bit weights
    (``reduce_range``) keep every pair sum in range. Measured here (AVX2, no VNNI): the shipped baseline's
    QAT model disagreed with its own fake-quant simulation on 1.05% of test images with 8-bit weights."""
    flags = set(machine_info()["cpu_flags"])
    x86 = bool(flags & {"avx2", "avx512f"})
    return x86 and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}


@lru_cache(maxsize=1)
def machine_info() -> dict[str, Any]:
    """CPU model and flags (recorded with every benchmark: int8 speed depends on VNNI), cores, versions."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, val = line.partition(":")
                key = key.strip().lower()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = val.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(val.split())
    except OSError:
        pass
    import numpy
    import onnxruntime
    import torch

    return {
        "cpu": model,
        "cpu_flags": [f for f in INTERESTING_FLAGS if f in flags],
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
    }

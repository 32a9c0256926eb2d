"""Device selection and seeding, so every command runs on CUDA when present and reproduces on CPU."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def select_device(requested: str | None = None) -> torch.device:
    """Return the requested device, else CUDA when available, else CPU."""
    if requested and requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            from drivecompress.errors import BadInputError

            raise BadInputError(f"--device {requested}: CUDA is not available on this machine")
        try:
            return torch.device(requested)
        except RuntimeError as exc:
            from drivecompress.errors import BadInputError

            raise BadInputError(f"--device {requested}: not a device (use cpu, cuda, cuda:N or auto)") from exc
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_THREADS: int | None = None


def limit_threads(n: int | None) -> None:
    """Use at most ``n`` CPU threads for training (PyTorch) and for accuracy and throughput runs (ONNX
    Runtime), so that two jobs can share a machine deliberately: two trainings of 2 threads each on these
    2 cores ran several times slower than one after the other. Batch-1 latency is always 1 thread."""
    global _THREADS
    if n is not None:
        most = 8 * (os.cpu_count() or 1)
        if not 1 <= n <= most:  # 100000 threads crashed ONNX Runtime (exit 139, nothing printed)
            raise ValueError(f"threads must be between 1 and {most} (8 per core), got {n}")
        torch.set_num_threads(n)
    _THREADS = n


def thread_limit() -> int | None:
    """The ``limit_threads`` limit, or None (every core)."""
    return _THREADS


def available_threads() -> int:
    """The threads a job may use: the ``limit_threads`` limit, else every core."""
    return _THREADS or os.cpu_count() or 1


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch so a training run is repeatable on the same machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))

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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch so a training run is repeatable on the same machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))

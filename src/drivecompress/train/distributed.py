"""Data-parallel training on ``torch.distributed``: the one loop (``fit``) runs unchanged on every rank when a
process group is up — training, fine-tuning after pruning, distillation (teacher on every rank) and QAT alike.

- launched by ``torchrun`` (or ``drivecompress ... --nproc-per-node N``, which calls it): the environment
  (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...) is torchrun's; ``init_from_env`` joins the group with ``gloo`` on
  CPU and ``nccl`` on CUDA, and a timeout so that a dead peer fails the run instead of hanging it;
- every rank draws the same epoch order (same seed: the track-aware split and the class-balance sampling are
  kept exactly) and takes its interleaved share of each global batch, so ``batch_size`` stays the global batch
  and the averaged gradient is the global batch's;
- augmentation is seeded per rank; metrics are summed over ranks; files are written by rank 0 only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

DEFAULT_TIMEOUT_S = 300.0
_EXIT_FILE = "DRIVECOMPRESS_EXIT_FILE"


def active() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Only rank 0 writes checkpoints, run folders and reports, and prints."""
    return rank() == 0


def init_from_env(device: torch.device, timeout_s: float | None = None) -> bool:
    """Join the process group torchrun describes in the environment (no-op for a single process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return active()
    timeout = timedelta(seconds=timeout_s or float(os.environ.get("DRIVECOMPRESS_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return active()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model as the training step calls it: DistributedDataParallel when a group is up (gradients are
    averaged across ranks in the backward pass), the module itself otherwise."""
    if not active():
        return model
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def shard(indices: torch.Tensor) -> torch.Tensor:
    """This rank's interleaved share of one global batch (or of the validation set)."""
    return indices[rank()::world_size()] if active() else indices


def sum_over_ranks(*values: float) -> list[float]:
    """Element-wise sum of a few numbers over all ranks (float64, on CPU with gloo)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def broadcast_state(model: nn.Module) -> None:
    """Make every rank hold rank 0's parameters and buffers (after steps that may differ per rank, such as
    BatchNorm statistics re-estimated on each rank's own batches)."""
    if active():
        for t in model.state_dict().values():
            dist.broadcast(t, 0)


def barrier() -> None:
    if active():
        dist.barrier()


def launch(argv: Sequence[str], nproc: int) -> int:
    """Re-run this command under torchrun with ``nproc`` local processes (single node, rendezvous on
    localhost); returns its exit code. For several machines run ``torchrun --nnodes ... -m drivecompress`` on
    each (README)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "drivecompress", *argv]
    with tempfile.TemporaryDirectory(prefix="drivecompress-launch-") as tmp:
        exit_file = Path(tmp) / "exit_code"
        env = {**os.environ, _EXIT_FILE: str(exit_file)}
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        rc = subprocess.call(cmd, env=env)
        if rc == 0 and exit_file.exists():
            return int(exit_file.read_text() or 0)
        return rc


def report_exit(rc: int) -> int:
    """In a launched worker, rank 0 hands its exit code (2 bad input, 3 gate refused) to ``launch`` through a
    file and exits 0, so torchrun does not report a deliberate verdict as a crashed worker."""
    path = os.environ.get(_EXIT_FILE)
    if path and "LOCAL_RANK" in os.environ and rc in (0, 2, 3):
        if is_main() and int(os.environ.get("RANK", "0")) == 0:
            Path(path).write_text(str(rc))
        return 0
    return rc

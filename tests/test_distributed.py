"""Data-parallel training: 2 processes (gloo on loopback) reach the weights 1 process reaches on the same
global batches; a rank that dies fails the run quickly instead of hanging it; ``train --nproc-per-node``."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from drivecompress.train.loop import fit

from .dist.worker import CONFIG, small_data, small_net

WORKER = Path(__file__).parent / "dist" / "worker.py"
TOLERANCE = 1e-5  # float32 sums in a different order (per-rank halves, then all-reduce)


def _torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_two_processes_reach_the_single_process_weights(tmp_path):
    out = tmp_path / "ddp.safetensors"
    proc = _torchrun(str(WORKER), str(out), "train")
    assert proc.returncode == 0, proc.stderr[-2000:]
    two = load_file(str(out))
    model = small_net()
    train, val = small_data()
    fit(model, train, val, CONFIG, torch.device("cpu"), description="single")
    one = model.state_dict()
    assert set(one) == set(two)
    worst = max(float((one[k] - two[k]).abs().max()) for k in one)
    assert worst < TOLERANCE, f"2-process weights differ from 1-process by {worst}"
    assert any(float((one[k] - small_net().state_dict()[k]).abs().max()) > 1e-3 for k in one)  # it trained


def test_a_dead_rank_fails_the_run_instead_of_hanging(tmp_path):
    t0 = time.perf_counter()
    proc = _torchrun(str(WORKER), str(tmp_path / "x.safetensors"), "die", timeout=120)
    assert proc.returncode != 0
    assert time.perf_counter() - t0 < 90
    assert "exitcode" in proc.stderr or "failed" in proc.stderr.lower()
    assert not (tmp_path / "x.safetensors").exists()


def test_train_command_with_two_processes_writes_one_checkpoint(tmp_path):
    out = tmp_path / "ck"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "drivecompress", "train", "--out", str(out), "--arch", "vgg",
                           "--width", "0.25", "--epochs", "1", "--subset", "256", "--max-batches", "2",
                           "--nproc-per-node", "2", "--json"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # rank 0 alone prints
    doc = json.loads(lines[0])
    assert doc["processes"] == 2
    meta = json.loads((out / "model.json").read_text())
    assert meta["training"]["processes"] == 2 and (out / "model.safetensors").exists()

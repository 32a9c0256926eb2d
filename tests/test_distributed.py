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

from .ddp_worker import CONFIG, small_data, small_net

WORKER = Path(__file__).parent / "ddp_worker.py"
TOLERANCE = 1e-5  # float32 sums in a different order (per-rank halves, then all-reduce)


def _torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           *args], capture_output=True, text=True, timeout=timeout, env=env)


def _why(proc: subprocess.CompletedProcess) -> str:
    """A failed torchrun's own cause: the ranks' error lines (gloo's "terminate called ...", a Python error),
    which torchrun's long summary pushes out of a plain stderr tail (one CI run lost rank 1 to SIGABRT, cause
    unseen), then that tail."""
    causes = [ln for ln in proc.stderr.splitlines()
              if any(w in ln for w in ("terminate", "what()", "Error", "error:")) and "torch/distributed" not in ln]
    return "\n".join(causes[:20]) + "\n...\n" + proc.stderr[-1500:]


def test_two_processes_reach_the_single_process_weights(tmp_path):
    out = tmp_path / "ddp.safetensors"
    proc = _torchrun(str(WORKER), str(out), "train")
    assert proc.returncode == 0, _why(proc)
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
    assert proc.returncode == 0, _why(proc)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # rank 0 alone prints
    doc = json.loads(lines[0])
    assert doc["processes"] == 2
    meta = json.loads((out / "model.json").read_text())
    assert meta["training"]["processes"] == 2 and (out / "model.safetensors").exists()


def _compress(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "drivecompress", "compress", *args, "--nproc-per-node", "2"],
                          capture_output=True, text=True, timeout=600, env=env)


def test_compress_with_two_processes_rank0_writes_and_the_verdict_exit_code_survives(tmp_path):
    from drivecompress.train.checkpoint import save_checkpoint

    from .conftest import tiny_model

    model_dir = save_checkpoint(tmp_path / "tiny", tiny_model("vgg"), {"class_names": [str(i) for i in range(43)]})
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - type: finetune\n    epochs: 1\n    train_subset: 256\n    batch_size: 64\n"
                      "evaluation:\n  test_subset: 200\n  latency_runs: 10\n  throughput_seconds: 0.2\n")
    out = tmp_path / "run"
    proc = _compress(str(model_dir), "--recipe", str(recipe), "--out", str(out), "--json")
    assert proc.returncode in (0, 3), _why(proc)
    assert len([ln for ln in proc.stdout.splitlines() if ln.startswith("{")]) == 1
    report = json.loads((out / "report.json").read_text())
    assert (proc.returncode == 0) is report["gate"]["passed"]
    assert sorted(p.name for p in (out / "steps").iterdir()) == ["00-finetune"]
    resumed = _compress(str(model_dir), "--recipe", str(recipe), "--out", str(out), "--resume", "--json")
    assert resumed.returncode == proc.returncode, _why(resumed)  # every rank resumes from rank 0's folder
    again = json.loads((out / "report.json").read_text())
    assert again["final"]["accuracy"] == report["final"]["accuracy"]
    bad = _compress(str(model_dir), "--recipe", str(recipe), "--out", str(tmp_path / "run2"),
                    "--set", "steps.0.no_such_key=1")
    assert bad.returncode == 2 and "no_such_key" in bad.stderr and not (tmp_path / "run2").exists()

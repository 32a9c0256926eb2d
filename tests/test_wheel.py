"""Issue #54: the package installs from a wheel and runs outside the checkout (the shipped baseline, searched
model and recipes travel inside it as package data). The wheel is installed into a temporary folder put first
on the path of this environment's interpreter, which supplies the dependencies (a fresh venv would copy torch's
wheel again: minutes for no extra evidence about the package itself)."""

import os
import subprocess
import sys
from pathlib import Path

from drivecompress.data.gtsrb import repo_root, resolve_data_path


def test_a_built_wheel_runs_eval_baseline_and_a_short_compress_outside_the_checkout(tmp_path):
    dist, site, work = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(dist), str(repo_root())], check=True, capture_output=True)
    wheel = next(dist.glob("drivecompress-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                    str(wheel)], check=True, capture_output=True)
    # The wheel's package first on the path, the environment's dependencies after it; run from a folder
    # that is not the checkout, with the data named by the environment variable.
    env = {**os.environ, "PYTHONPATH": str(site), "DRIVECOMPRESS_DATA": str(resolve_data_path())}
    cli = [sys.executable, "-m", "drivecompress"]
    where = subprocess.run([sys.executable, "-c", "import drivecompress; print(drivecompress.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where  # really the wheel, not the checkout
    ev = subprocess.run([*cli, "eval", "baseline", "--subset", "200", "--json"], cwd=work, env=env,
                        capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr[-800:]
    assert '"accuracy"' in ev.stdout
    run = subprocess.run([*cli, "compress", "baseline", "--recipe", "recipes/int8-ptq.yaml", "--out", "run",
                          "--set", "steps.0.calibration_images=32", "--set", "evaluation.test_subset=200",
                          "--set", "evaluation.latency_runs=10", "--set", "evaluation.throughput_seconds=0.2",
                          "--json"], cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode in (0, 3), run.stderr[-800:]
    assert (work / "run" / "report.json").exists()
    shipped = Path(site) / "drivecompress" / "_shipped"
    assert (shipped / "searched" / "model.onnx").is_file() and (shipped / "recipes" / "default.yaml").is_file()

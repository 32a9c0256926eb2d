import json
import re
import subprocess
import sys

import pytest

from drivecompress.cli import build_parser, main
from drivecompress.train.checkpoint import save_checkpoint

from .conftest import tiny_model

SUBCOMMANDS = ["train", "eval", "bench", "demo", "data", "compress", "robustness"]


def test_top_level_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "drivecompress", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    listed = {line.split()[0] for line in out.stdout.splitlines() if line.startswith("    ") and line.split()}
    assert set(SUBCOMMANDS) <= listed
    assert "Exit codes" in out.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_explains_itself(name, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([name, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert f"drivecompress {name}" in text and len(text) > 300


def test_eval_json_is_one_object(tmp_path, capsys):
    save_checkpoint(tmp_path / "m", tiny_model("resnet"))
    assert main(["eval", str(tmp_path / "m"), "--subset", "200", "--json"]) == 0
    out = capsys.readouterr().out.strip()
    doc = json.loads(out)
    assert "\n" not in out and doc["images"] == 200
    assert 0 <= doc["accuracy"] <= 1 and len(doc["per_class_recall"]) == 43 and doc["macs"] > 0


def test_bench_json_records_machine(tmp_path, capsys):
    save_checkpoint(tmp_path / "m", tiny_model("vgg"))
    assert main(["bench", str(tmp_path / "m"), "--runs", "20", "--warmup", "2", "--seconds", "0.2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["onnx_max_abs_diff"] < 1e-4 and doc["latency_ms_p50"] > 0 and doc["throughput_ips"] > 0
    assert "cpu_flags" in doc["machine"] and doc["torch_latency_ms_p50"] > 0


def test_threads_limits_torch_and_onnx_runtime(tmp_path, capsys, monkeypatch):
    """--threads N: PyTorch trains on N threads and ONNX Runtime sessions default to N (batch-1 latency
    stays 1 thread); the process-wide limit is put back afterwards so other tests see every core."""
    import torch

    from drivecompress.evaluate.predictor import OnnxPredictor
    from drivecompress.utils import device

    seen = []
    real = OnnxPredictor.__init__

    def spy(self, path, threads=None, name=None):
        real(self, path, threads, name)
        seen.append(self.session.get_session_options().intra_op_num_threads)

    monkeypatch.setattr(OnnxPredictor, "__init__", spy)
    from drivecompress.export.onnx import export_onnx

    before = torch.get_num_threads()
    onnx = export_onnx(tiny_model("resnet"), tmp_path / "m.onnx", torch.zeros(2, 3, 32, 32)).path
    try:
        assert main(["eval", str(onnx), "--subset", "64", "--threads", "1", "--json"]) == 0
        assert torch.get_num_threads() == 1 and device.available_threads() == 1
    finally:
        device.limit_threads(None)
        torch.set_num_threads(before)
    assert json.loads(capsys.readouterr().out)["images"] == 64
    assert seen and set(seen) == {1}
    seen.clear()
    assert main(["eval", str(onnx), "--subset", "64", "--json"]) == 0
    assert seen and set(seen) == {0}  # no limit: ONNX Runtime's own default (every core)


def test_train_cli_quick_run_and_no_overwrite(tmp_path, capsys):
    out = tmp_path / "ck"
    args = ["train", "--out", str(out), "--arch", "vgg", "--width", "0.25", "--epochs", "1", "--subset", "256",
            "--max-batches", "2", "--amp", "off", "--class-balance", "0.5", "--scale-min", "0.3", "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    meta = json.loads((out / "model.json").read_text())
    assert doc["test_accuracy"] == meta["metrics"]["test_accuracy"]
    assert meta["training"]["config"]["seed"] == 0 and "history" in meta["training"]
    assert meta["training"]["config"]["class_balance"] == 0.5
    assert meta["training"]["config"]["augment_cfg"]["scale_min"] == 0.3
    before = (out / "model.safetensors").read_bytes()
    assert main(args) == 2  # refuses to overwrite
    assert (out / "model.safetensors").read_bytes() == before
    assert "already holds a checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["eval", "/no/such/model"], "model not found"),
        (["train", "--out", "/tmp/x", "--epochs", "0"], "--epochs: must be greater than or equal to 1"),
        (["train", "--out", "/tmp/x", "--class-balance", "2"], "--class-balance"),
        (["train", "--out", "/tmp/x", "--scale-min", "0"], "--scale-min"),
        (["bench", "baseline", "--runs", "0"], "--runs"),
        (["eval", "baseline", "--threads", "0"], "--threads"),
        (["eval", "baseline", "--device", "cuda:7", "--subset", "50"], None),
    ],
)
def test_bad_input_exit_2_one_line(argv, needle, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    if needle is None:  # CUDA may exist on a GPU machine; then eval simply succeeds
        assert code in (0, 2)
        return
    assert code == 2 and len(err) == 1 and needle in err[0]


def test_train_flags_are_checked_by_train_config_and_named(tmp_path, capsys):
    """drivecompress train's bounds are TrainConfig's own (the API refuses the same values): one line naming
    the flag, the bound and the value, exit 2, nothing written."""
    out = tmp_path / "ck"
    for argv, expected in (
            (["--batch-size", "0"], "--batch-size: must be greater than or equal to 1 (got 0)"),
            (["--lr", "0"], "--lr: must be greater than 0 (got 0.0)"),
            (["--label-smoothing", "1"], "--label-smoothing: must be less than 1 (got 1.0)"),
            (["--max-batches", "0"], "--max-batches-per-epoch: must be greater than or equal to 1 (got 0)"),
            (["--scale-min", "2"], "--scale-min: must be less than or equal to 1.1 (got 2.0)"),
            (["--epochs", "3", "--swa-epochs", "3"], "--swa-epochs (3) must be fewer than --epochs (3)")):
        assert main(["train", "--out", str(out), *argv]) == 2
        assert capsys.readouterr().err.strip() == f"drivecompress: error: {expected}"
        assert not out.exists()


def test_train_config_refuses_out_of_range_values_in_the_api():
    from pydantic import ValidationError

    from drivecompress.data.transforms import AugmentConfig
    from drivecompress.train.loop import TrainConfig

    for bad in ({"epochs": 0}, {"lr": -0.1}, {"class_balance": 1.5}, {"epochs": 2, "swa_epochs": 2}):
        with pytest.raises(ValidationError):
            TrainConfig(**bad)
    for bad in ({"scale_min": 0}, {"scale_min": 1.0, "scale_max": 0.9}, {"rotate_deg": -1}, {"shift_px": -1},
                {"brightness": (0.0, 1.5)}, {"gamma": (1.4, 0.7)}, {"channel_gain": 1.0}, {"blur_prob": 1.5},
                {"blur_sigma_max": -0.1}):
        with pytest.raises(ValidationError):
            AugmentConfig(**bad)
    with pytest.raises(ValidationError, match=r"gamma must be a range \(low, high\) with 0 < low <= high"):
        AugmentConfig(gamma=(1.4, 0.7))
    assert TrainConfig(epochs=2, swa_epochs=1).augment_cfg == AugmentConfig()


def test_config_from_flags_names_a_value_from_no_flag_by_its_field():
    """A refused value the caller passed (not a flag) must not be reported under a flag that does not exist."""
    import argparse

    from drivecompress.commands.base import config_from_flags
    from drivecompress.errors import BadInputError
    from drivecompress.train.loop import TrainConfig

    args = argparse.Namespace(epochs=None)
    with pytest.raises(BadInputError, match=r"^TrainConfig\.batch_size: must be greater than or equal to 1"):
        config_from_flags(TrainConfig, args, ("epochs",), batch_size=0)
    args.epochs = 0
    with pytest.raises(BadInputError, match=r"^--epochs: must be greater than or equal to 1 \(got 0\)$"):
        config_from_flags(TrainConfig, args, ("epochs",))


def test_gate_command_passes_an_equal_model_and_refuses_a_worse_one(tmp_path, capsys, data):
    from drivecompress.data.transforms import deploy_input
    from drivecompress.evaluate.loading import load_model_arg
    from drivecompress.export.onnx import export_onnx

    same = export_onnx(load_model_arg("baseline").module, tmp_path / "b.onnx", deploy_input(data.test.x[:16])).path
    assert main(["gate", "baseline", str(same), "--subset", "400", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] and doc["violations"] == [] and doc["images"] == 400
    save_checkpoint(tmp_path / "bad", tiny_model("resnet"))
    assert main(["gate", "baseline", str(tmp_path / "bad"), "--subset", "400", "--json"]) == 3
    doc = json.loads(capsys.readouterr().out)  # the verdict is printed even when refused
    assert not doc["passed"] and any("degraded" in v for v in doc["violations"])
    assert doc["evidence_units"].startswith("physical signs (recovered")  # GTSRB's test tracks, recovered
    for v in doc["lost_gained"].values():  # lost, gained, n, signs, adjusted p, and the baseline's coin flips
        m = re.fullmatch(r"-(\d+) \+(\d+) of (\d+) \((\d+) of (\d+) signs\), p_holm [0-9.e+-]+"
                         r"(?:, (\d+) lost at baseline p < 0\.5)?", v)
        assert m and int(m[6] or 0) <= int(m[1]) and int(m[4]) <= int(m[5]), v


def test_one_version_number():
    """pyproject.toml said 0.1.0 while drivecompress.__version__ said 0.2.0 (issue #54): the package metadata
    now reads the attribute."""
    from importlib.metadata import version

    import drivecompress

    assert version("drivecompress") == drivecompress.__version__

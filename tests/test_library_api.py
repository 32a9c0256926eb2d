"""The public API on a user's own network and arrays: the README's example runs as written, an ONNX file
from outside the zoo goes through the CLI's graph-only steps, and module-only steps on ONNX are refused."""

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import drivecompress as dc
from drivecompress.cli import main
from drivecompress.data.gtsrb import repo_root, resolve_data_path
from drivecompress.data.transforms import deploy_input

from .nets import make_net

QUICK = ["--set", "evaluation.test_subset=300", "--set", "evaluation.latency_runs=20",
         "--set", "evaluation.throughput_seconds=0.2"]


def readme_example() -> str:
    text = (repo_root() / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md lost its <!-- api-example --> block"
    return m.group(1)


def test_readme_example_compresses_its_own_network(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DRIVECOMPRESS_DATA", str(resolve_data_path()))
    scope: dict = {}
    exec(compile(readme_example(), "README.md example", "exec"), scope)
    result = scope["result"]
    assert isinstance(result, dc.CompressResult) and result.model_path.exists()
    assert [s["type"] for s in result.report["steps"]] == ["prune", "ptq"]
    assert result.report["final"]["macs"] < result.report["baseline"]["macs"]
    assert result.model_path.name == ("model.onnx" if result.passed else "model.rejected.onnx")
    kinds = {i.data_type for i in onnx.load(str(result.model_path)).graph.initializer}
    assert onnx.TensorProto.INT8 in kinds
    assert (tmp_path / "out" / "readme-example" / "report.html").exists()


def _user_onnx(tmp_path: Path, data) -> Path:
    return dc.export_onnx(make_net("se_group"), tmp_path / "user.onnx", deploy_input(data.test.x[:16])).path


def test_cli_compresses_an_onnx_file_from_outside_the_zoo(tmp_path, data, capsys):
    src = _user_onnx(tmp_path, data)
    out = tmp_path / "run"
    rc = main(["compress", str(src), "--recipe", str(repo_root() / "recipes" / "int8-ptq.yaml"), "--out", str(out),
               "--json", *QUICK])
    assert rc in (0, 3)
    final = out / ("model.onnx" if rc == 0 else "model.rejected.onnx")
    assert {i.data_type for i in onnx.load(str(final)).graph.initializer} >= {onnx.TensorProto.INT8}
    doc = __import__("json").loads(capsys.readouterr().out)
    assert doc["gate_passed"] is (rc == 0)  # --json prints the summary even when the gate refuses
    # the user's ONNX model gets the same evidence: its discordance and the gate's noise level at it
    assert re.match(r"the candidate disagrees with the baseline on \d+\.\d\d% ", doc["gate_noise"])
    # and the same MACs columns as a checkpoint, read from the graph (int8 counts the float graph's MACs)
    report = __import__("json").loads((out / "report.json").read_text())
    assert report["baseline"]["macs"] == report["final"]["macs"] > 0


def test_residual_adds_stay_float_on_a_users_network_through_cli_and_api(tmp_path, data, mini_data, capsys):
    """``exclude_ops: [Add]`` (the default recipe's) on a network from outside the zoo: the CLI keeps every Add
    of the user's ONNX graph out of quantization (named in the step's notes) while the convolutions are int8,
    and ``dc.quantize`` does the same to a user's nn.Module, giving a different graph from the default PTQ."""
    src = _user_onnx(tmp_path, data)
    out = tmp_path / "run"
    rc = main(["compress", str(src), "--recipe", str(repo_root() / "recipes" / "default.yaml"), "--out", str(out),
               "--json", *QUICK])
    assert rc in (0, 3)
    capsys.readouterr()
    report = __import__("json").loads((out / "report.json").read_text())
    g = onnx.load(str(out / ("model.onnx" if rc == 0 else "model.rejected.onnx"))).graph
    adds = sorted(n.name for n in g.node if n.op_type == "Add")
    assert adds and sorted(report["steps"][0]["notes"]["kept_float"]) == adds
    assert onnx.TensorProto.INT8 in {i.data_type for i in g.initializer}

    def q_nodes(path) -> int:
        return sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)

    net = make_net("se_group")
    kept = dc.quantize(net, mini_data, tmp_path / "api.onnx", dc.PTQConfig(calibration_images=32,
                                                                            exclude_ops=["Add"]))["kept_float"]
    assert kept and all(n.rsplit("/", 1)[-1].startswith("Add") for n in kept)
    dc.quantize(net, mini_data, tmp_path / "default.onnx", dc.PTQConfig(calibration_images=32))
    assert q_nodes(tmp_path / "api.onnx") != q_nodes(tmp_path / "default.onnx")


@pytest.mark.parametrize("recipe", ["prune-structured.yaml", "int8-qat.yaml"])
def test_module_steps_on_onnx_exit_2_naming_the_step(recipe, tmp_path, data, capsys):
    src = _user_onnx(tmp_path, data)
    rc = main(["compress", str(src), "--recipe", str(repo_root() / "recipes" / recipe), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and re.search(r"step 0 \(\w+\) needs the PyTorch module", err)
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_onnx_with_wrong_class_count_is_refused(tmp_path, data, capsys):
    path = dc.export_onnx(make_net("branch", num_classes=10), tmp_path / "ten.onnx",
                          deploy_input(data.test.x[:4])).path
    rc = main(["eval", str(path), "--subset", "50"])
    assert rc == 2 and "has 10 classes, the data has 43" in capsys.readouterr().err


def test_data_from_folder_and_grayscale(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("stop", "yield"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
                Image.fromarray(img).save(tmp_path / split / cls / f"{i}.png")
    d = dc.Data.from_folder(tmp_path, safety_critical=["stop"])
    assert d.class_names == ("stop", "yield") and d.safety_critical == {0} and d.input_shape == (3, 24, 24)
    assert len(d.test) == 4 and len(d.train) + len(d.val) == 12
    g = dc.Data.from_arrays(rng.integers(0, 255, (20, 16, 16), dtype=np.uint8), np.arange(20) % 4,
                            rng.integers(0, 255, (8, 16, 16), dtype=np.uint8), np.arange(8) % 4)
    assert g.input_shape == (1, 16, 16) and g.num_classes == 4


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"x_train": np.zeros((4, 32, 32, 3), np.float32)}, "x_train: dtype float32"),
     ({"y_train": np.arange(3)}, "y_train: shape"),
     ({"x_test": np.zeros((2, 16, 16, 3), np.uint8), "y_test": np.zeros(2, int)}, "x_test: images of shape"),
     ({"safety_critical": [99]}, "safety_critical: classes \\[99\\]")],
)
def test_bad_arrays_are_clear_errors(kwargs, needle):
    base = {"x_train": np.zeros((4, 32, 32, 3), np.uint8), "y_train": np.arange(4),
            "x_test": np.zeros((2, 32, 32, 3), np.uint8), "y_test": np.arange(2)}
    args = {**base, **kwargs}
    extra = {"safety_critical": args.pop("safety_critical")} if "safety_critical" in args else {}
    with pytest.raises(dc.BadInputError, match=needle):
        dc.Data.from_arrays(args["x_train"], args["y_train"], args["x_test"], args["y_test"], **extra)



def test_start_step_continues_a_user_networks_run_through_the_api(tmp_path, mini_data):
    """A chain split in two on a network outside the zoo: its step checkpoint is saved by layout, and the
    second run's ``start`` rebuilds it from the user's module (the same template --resume uses)."""
    net = make_net("se_group")
    ev = {"test_subset": 200, "latency_runs": 10, "throughput_seconds": 0.1}
    fine = {"evaluation": ev, "steps": [{"type": "finetune", "epochs": 1, "train_subset": 128, "batch_size": 64}]}
    first = dc.compress(net, fine, data=mini_data, out=tmp_path / "a")
    made = tmp_path / "a" / "steps" / "00-finetune" / "model"
    chain = {"evaluation": ev, "steps": [{"type": "start", "path": str(made)},
                                         {"type": "ptq", "calibration_images": 32}]}
    second = dc.compress(net, chain, data=mini_data, out=tmp_path / "b")
    assert second.report["baseline"]["accuracy"] == first.report["baseline"]["accuracy"]
    assert second.report["steps"][0]["metrics"]["accuracy"] == first.report["steps"][0]["metrics"]["accuracy"]
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(second.model_path)).graph.node)


def test_rewinding_a_user_networks_sparse_model_keeps_its_zeros(tmp_path, mini_data):
    """A recipe of ``unstructured`` then ``finetune`` (learning-rate rewinding) on a network outside the zoo: the
    finetune step's checkpoint has at least the zeros the pruning made (``keep_zeros``), in the same places."""
    import torch

    net = make_net("dw_seq")
    ev = {"test_subset": 200, "latency_runs": 10, "throughput_seconds": 0.1}
    small = {"train_subset": 128, "batch_size": 64}
    recipe = {"evaluation": ev, "steps": [
        {"type": "unstructured", "sparsity": 0.6, "iterations": 1, "recovery_epochs": 0, **small},
        {"type": "finetune", "epochs": 1, "lr": 0.05, **small}]}
    dc.compress(net, recipe, data=mini_data, out=tmp_path / "run")
    pruned = dc.load_model(tmp_path / "run" / "steps" / "00-unstructured" / "model", template=make_net("dw_seq"))
    rewound = dc.load_model(tmp_path / "run" / "steps" / "01-finetune" / "model", template=make_net("dw_seq"))
    convs = [(a.weight, b.weight) for a, b in zip(pruned.modules(), rewound.modules(), strict=True)
             if isinstance(a, torch.nn.Conv2d)]
    assert sum(int((p == 0).sum()) for p, _ in convs) >= 0.6 * sum(p.numel() for p, _ in convs)
    assert all(bool((r[p == 0] == 0).all()) for p, r in convs)
    assert any(not torch.equal(p, r) for p, r in convs)  # it did train


def test_an_onnx_model_teaches_a_new_student_through_onnx_runtime(tmp_path, data, capsys):
    """A team's model as an .onnx file only: the distill step builds a new student and takes the teacher's
    logits from ONNX Runtime (the same logits as the module it was exported from), the steps after it work on
    the student; feature transfer, which needs the teacher's layers, is refused naming the file."""
    import json

    import torch

    from drivecompress.distill.step import DistillConfig, Distiller, OnnxTeacher
    from drivecompress.evaluate.predictor import OnnxPredictor, predict_all

    net = make_net("se_group").eval()
    src = dc.export_onnx(net, tmp_path / "user.onnx", deploy_input(data.test.x[:16])).path
    x = torch.as_tensor(deploy_input(data.val.x[:8]))
    with torch.no_grad():
        assert (OnnxTeacher(src)(x) - net(x)).abs().max().item() < 1e-4
    out = tmp_path / "run"
    rc = main(["compress", str(src), "--recipe", str(repo_root() / "recipes" / "distill-student.yaml"), "--out",
               str(out), "--json", *QUICK, "--set", "steps.0.epochs=1", "--set", "steps.0.train_subset=256",
               "--set", "steps.1.calibration_images=32"])
    assert rc in (0, 3), capsys.readouterr().err[-2000:]
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    notes = report["steps"][0]["notes"]
    onnx_val = float((predict_all(OnnxPredictor(src), data.val.x).argmax(1) == data.val.y).mean())
    assert notes["teacher_val_accuracy"] == pytest.approx(onnx_val, abs=1e-9)
    from drivecompress.evaluate.complexity import count_macs
    from drivecompress.models import build_model

    assert report["final"]["macs"] == count_macs(build_model(notes["student"]), data.input_shape)  # the student
    with pytest.raises(ValueError, match="user.onnx is an ONNX graph"):
        Distiller(make_net("se_group"), OnnxTeacher(src), DistillConfig(feature_pairs=[("stem", "stem")]),
                  torch.device("cpu"), x[:1])


def test_a_recipe_teacher_may_be_an_onnx_file(tmp_path, data):
    """The recipe's ``teacher`` (and ``search --final-teacher``) takes .onnx files too, alone or in an ensemble;
    the file's bytes are the teacher's identity for --resume; a graph for other classes is refused naming the
    key."""
    import torch

    from drivecompress.distill.step import OnnxTeacher
    from drivecompress.pipeline.runner import load_teachers
    from drivecompress.train.checkpoint import weights_sha256

    a = _user_onnx(tmp_path, data)
    b = dc.export_onnx(make_net("se_group", seed=1), tmp_path / "b.onnx", deploy_input(data.test.x[:16])).path
    one = load_teachers(str(a), None, data)
    both = load_teachers([str(a), str(b)], None, data)
    x = torch.as_tensor(deploy_input(data.val.x[:4]))
    with torch.no_grad():
        mean = (OnnxTeacher(a)(x) + OnnxTeacher(b)(x)) / 2
        assert isinstance(one, OnnxTeacher) and torch.allclose(both(x), mean, atol=1e-6)
    assert weights_sha256(one) != weights_sha256(load_teachers(str(b), None, data))
    ten = dc.export_onnx(make_net("branch", num_classes=10), tmp_path / "ten.onnx", deploy_input(data.test.x[:4])).path
    with pytest.raises(dc.BadInputError, match=r"recipe key 'teacher' \(.*ten.onnx\): .*10 classes"):
        load_teachers(str(ten), None, data)


@pytest.mark.parametrize(("net", "needle"), [
    ("tuple", "forward returns a tuple"),
    ("gray", r"does not take this data's \(3, 32, 32\) images"),
    ("ten", "predicts 10 classes; this data has 43"),
])
def test_a_module_the_data_cannot_drive_is_refused_in_one_line_before_anything_is_written(
        tmp_path, mini_data, net, needle):
    """Issue #53: a tuple-returning forward gave AttributeError deep in measuring, a 1-channel network a raw
    export error, a 10-class network a run folder left behind."""
    from drivecompress.errors import BadInputError

    class Pair(torch.nn.Module):
        def __init__(self, classes: int = 43, channels: int = 3):
            super().__init__()
            self.conv = torch.nn.Conv2d(channels, 8, 3)
            self.fc = torch.nn.Linear(8, classes)

        def forward(self, x):
            logits = self.fc(self.conv(x).mean((2, 3)))
            return (logits, x) if net == "tuple" else logits

    model = {"tuple": Pair(), "gray": Pair(channels=1), "ten": Pair(classes=10)}[net]
    with pytest.raises(BadInputError, match=needle) as exc:
        dc.compress(model, {"steps": [{"type": "ptq"}]}, data=mini_data, out=tmp_path / "run")
    assert "\n" not in str(exc.value) and not (tmp_path / "run").exists()

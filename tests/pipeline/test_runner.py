"""The runner on tiny recipes: run folder contract, gate refusal, SIGKILL + --resume equivalence."""

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from drivecompress.cli import main
from drivecompress.core import StepConfig, register_step
from drivecompress.distill import student as student_module
from drivecompress.distill.step import TeacherEnsemble
from drivecompress.models import build_model, default_spec
from drivecompress.train.checkpoint import save_checkpoint, weights_sha256

from ..conftest import tiny_model

EVAL = {"test_subset": 300, "latency_runs": 20, "throughput_seconds": 0.2}
METRIC_KEYS = {"accuracy", "per_class_recall", "params", "macs", "size_bytes", "latency_ms_p50", "latency_ms_p99",
               "throughput_ips", "ece"}


@pytest.fixture()
def ckpt(tmp_path):
    return str(save_checkpoint(tmp_path / "ck", tiny_model("resnet")))


def _recipe(tmp_path, steps, budgets=None, name="r.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump({"evaluation": EVAL, "budgets": budgets or {}, "steps": steps}))
    return str(p)


def test_report_schema_and_run_folder(tmp_path, ckpt, capsys):
    recipe = _recipe(tmp_path, [{"type": "ptq", "calibration_images": 32}])
    out = tmp_path / "run"
    assert main(["compress", ckpt, "--recipe", recipe, "--out", str(out), "--json"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert set(rep) >= {"baseline", "steps", "final", "gate"}
    assert set(rep["baseline"]) >= METRIC_KEYS and set(rep["final"]) >= METRIC_KEYS
    assert [set(s) >= {"name", "type", "seconds", "metrics"} for s in rep["steps"]] == [True]
    sbs = rep["side_by_side_latency"]
    assert len(sbs["final"]["round_medians_ms"]) == 5 and sbs["baseline"]["latency_ms_p50"] > 0
    assert rep["ratios"]["latency_ms_p50_ratio"] == sbs["baseline"]["latency_ms_p50"] / sbs["final"]["latency_ms_p50"]
    # the throughput ratio comes from the same interleaved rounds, not from a baseline measured at the run's start
    assert rep["ratios"]["throughput_ratio"] == sbs["final"]["throughput_ips"] / sbs["baseline"]["throughput_ips"]
    assert rep["gate"]["passed"] and rep["gate"]["violations"] == [] and len(rep["final"]["per_class_recall"]) == 43
    assert "faster than the fp32 baseline" in rep["speed_verdict"]  # either "is ... faster" or "is NOT faster"
    for f in ("model.onnx", "baseline.onnx", "report.html", "recipe.yaml"):
        assert (out / f).exists(), f
    html = (out / "report.html").read_text()
    assert 'id="summary"' in html and "data:image/png;base64," in html
    assert json.loads(capsys.readouterr().out)["gate_passed"] is True
    # a second run into the same folder is refused without --resume; nothing is touched
    before = (out / "report.json").read_bytes()
    assert main(["compress", ckpt, "--recipe", recipe, "--out", str(out)]) == 2
    assert (out / "report.json").read_bytes() == before


def test_gate_refusal_exits_3_and_keeps_rejected_model(tmp_path, ckpt, capsys):
    recipe = _recipe(tmp_path, [{"type": "ptq", "calibration_images": 32}], budgets={"max_latency_ms": 1e-6})
    out = tmp_path / "run"
    assert main(["compress", ckpt, "--recipe", recipe, "--out", str(out)]) == 3
    assert (out / "model.rejected.onnx").exists() and not (out / "model.onnx").exists()
    rep = json.loads((out / "report.json").read_text())
    assert not rep["gate"]["passed"] and "exceeds" in rep["gate"]["violations"][0]
    assert "REJECTED" in (out / "report.html").read_text()
    assert "gate refused" in capsys.readouterr().err


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, ckpt):
    steps = [{"type": "finetune", "epochs": 1, "train_subset": 256, "batch_size": 64},
             {"type": "finetune", "epochs": 2, "train_subset": 768, "batch_size": 64, "name": "long"},
             {"type": "ptq", "calibration_images": 32}]
    recipe = _recipe(tmp_path, steps)
    cmd = [sys.executable, "-m", "drivecompress", "compress", ckpt, "--recipe", recipe]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "steps" / "01-finetune").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    assert proc.poll() is None, "run finished before it could be killed mid-step"
    second = subprocess.run([*cmd, "--out", str(killed), "--resume"], capture_output=True, text=True)
    assert second.returncode == 2 and "in use by another drivecompress" in second.stderr  # the run folder's lock
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (killed / "steps" / "00-finetune" / "done.json").exists()
    assert not (killed / "steps" / "01-finetune" / "done.json").exists()
    # Then kill the resumed run at seeded random moments (a step, an export, the final measurement...).
    rng = random.Random(0)
    for _ in range(2):
        again = subprocess.Popen([*cmd, "--out", str(killed), "--resume"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(3.0, 12.0))
        if again.poll() is None:
            os.kill(again.pid, signal.SIGKILL)
        again.wait()
    assert subprocess.run([*cmd, "--out", str(killed), "--resume"], capture_output=True).returncode == 0
    whole = tmp_path / "whole"
    assert subprocess.run([*cmd, "--out", str(whole)], capture_output=True).returncode == 0
    a = json.loads((killed / "report.json").read_text())["final"]
    b = json.loads((whole / "report.json").read_text())["final"]
    assert a["accuracy"] == b["accuracy"] and a["per_class_recall"] == b["per_class_recall"]
    assert a["size_bytes"] == b["size_bytes"] and a["macs"] == b["macs"]


def test_robustness_figures_recorded_and_budgeted(tmp_path, ckpt):
    ev = {**EVAL, "robustness": True, "robustness_images": 20, "attack_images": 16}
    p = tmp_path / "rob.yaml"
    p.write_text(yaml.safe_dump({"evaluation": ev, "budgets": {"max_corruption_accuracy_drop": 100},
                                 "steps": [{"type": "ptq", "calibration_images": 32}]}))
    out = tmp_path / "run"
    assert main(["compress", ckpt, "--recipe", str(p), "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    for m in (rep["baseline"], rep["final"]):
        assert 0 <= m["corruption_accuracy"] <= 1 and 0 <= m["adversarial_accuracy"] <= 1
    assert rep["final"]["robustness"]["adversarial"]["method"].startswith("transfer")
    assert "<h2>Robustness</h2>" in (out / "report.html").read_text()


def test_quantization_recipes_run_end_to_end(tmp_path, ckpt):
    """The shipped int8 recipes (shortened with --set) produce an int8 model.onnx beside baseline.onnx."""
    from drivecompress.data.gtsrb import repo_root
    from drivecompress.quant.ptq import int8_weight_count

    for name, sets in (("int8-ptq", ["steps.0.calibration_images=32"]),
                       ("int8-qat", ["steps.0.epochs=1", "steps.0.train_subset=128"])):
        out = tmp_path / name
        args = ["compress", ckpt, "--recipe", str(repo_root() / "recipes" / f"{name}.yaml"), "--out", str(out),
                "--set", "evaluation.test_subset=100", "--set", "evaluation.latency_runs=10",
                "--set", "evaluation.throughput_seconds=0.2", "--set", "budgets.max_accuracy_drop=100",
                "--set", "budgets.max_safety_recall_drop=100"]
        for s in sets:
            args += ["--set", s]
        assert main(args) == 0, name
        assert (out / "baseline.onnx").exists()
        assert int8_weight_count(out / "model.onnx")["int8_elements"] > 10_000
        if name == "int8-ptq":  # the recipe runs the sensitivity analysis; report.html shows its search
            notes = json.loads((out / "report.json").read_text())["steps"][0]["notes"]
            assert notes["sensitivity_steps"][0]["kept_float"] == "-" and "kept_float_ops" in notes
            assert "<th>kept in float</th><th>validation accuracy</th>" in (out / "report.html").read_text()


def test_prune_with_distillation_recovery_keeps_the_teacher_intact(tmp_path, ckpt):
    """The input model is the teacher: pruning the working copy must not prune (or freeze) the teacher."""
    recipe = _recipe(tmp_path, [{"type": "prune", "ratio": 0.3, "round_to": None, "recovery_epochs": 1,
                                 "train_subset": 128, "distill": True}])
    out = tmp_path / "run"
    assert main(["compress", ckpt, "--recipe", recipe, "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["final"]["macs"] < rep["baseline"]["macs"]
    assert rep["steps"][0]["notes"]["history"][-1]["recovery"] is True


def test_float_step_after_quantization_is_bad_input(tmp_path, ckpt, capsys):
    recipe = _recipe(tmp_path, [{"type": "ptq", "calibration_images": 32}, {"type": "finetune", "epochs": 1}])
    assert main(["compress", ckpt, "--recipe", recipe, "--out", str(tmp_path / "run")]) == 2
    assert "step 1 (finetune): needs a float model" in capsys.readouterr().err


def test_start_continues_from_an_earlier_runs_checkpoint_of_the_same_model(tmp_path, ckpt, capsys):
    """A long chain split in two (the demo's distill → QAT): the second run starts from the first run's step
    checkpoint, but is measured and gated against the input model; a checkpoint of another model is refused."""
    first = tmp_path / "first"
    fine = [{"type": "finetune", "epochs": 1, "train_subset": 256, "batch_size": 64}]
    assert main(["compress", ckpt, "--recipe", _recipe(tmp_path, fine, name="a.yaml"), "--out", str(first)]) == 0
    made = first / "steps" / "00-finetune" / "model"
    origin = json.loads((made / "model.json").read_text())["derived_from"]
    assert origin["step"] == 0 and origin["step_type"] == "finetune" and len(origin["model_sha256"]) == 64
    steps = [{"type": "start", "path": str(made), "made_by": "the a.yaml run"},
             {"type": "ptq", "calibration_images": 32}]
    recipe = _recipe(tmp_path, steps, name="b.yaml")
    second = tmp_path / "second"
    assert main(["compress", ckpt, "--recipe", recipe, "--out", str(second)]) == 0
    a, b = (json.loads((d / "report.json").read_text()) for d in (first, second))
    assert b["baseline"]["accuracy"] == a["baseline"]["accuracy"]  # the gate's reference is the input model
    assert b["steps"][0]["metrics"]["accuracy"] == a["steps"][0]["metrics"]["accuracy"]  # the very checkpoint
    # another input model: refused before anything is written
    other = str(save_checkpoint(tmp_path / "other", tiny_model("resnet", seed=1)))
    capsys.readouterr()
    assert main(["compress", other, "--recipe", recipe, "--out", str(tmp_path / "third")]) == 2
    err = capsys.readouterr().err
    assert "recipe step 0 (start)" in err and "made from another model" in err and "the a.yaml run" in err
    assert not (tmp_path / "third").exists()
    # a checkpoint that does not say where it came from (saved by hand) cannot be a start point
    steps[0]["path"] = ckpt
    assert main(["compress", ckpt, "--recipe", _recipe(tmp_path, steps, name="c.yaml"),
                 "--out", str(tmp_path / "fourth")]) == 2
    assert "does not record the model it was made from" in capsys.readouterr().err
    assert not (tmp_path / "fourth").exists()


class _ProbeConfig(StepConfig):
    """A step that only records which models its context hands it."""


@register_step("probe-teacher", _ProbeConfig)
def _probe(state, cfg, ctx):
    notes = {"teacher": weights_sha256(ctx.teacher), "input": weights_sha256(ctx.input_model)}
    return dataclasses.replace(state, notes=notes)


def test_recipe_teacher_replaces_the_input_model_as_teacher_only(tmp_path, ckpt, capsys):
    """``teacher:`` hands distilling steps another model (e.g. an unsmoothed one); the gate, the start-step
    template and the baseline stay the input model. A teacher that cannot score this data, a missing folder,
    and a resume after the teacher changed are refused before anything is written."""
    other = tmp_path / "teacher"
    save_checkpoint(other, tiny_model("resnet", seed=1))
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump({"evaluation": EVAL, "teacher": str(other),
                                 "steps": [{"type": "probe-teacher"}, {"type": "finetune", "epochs": 1,
                                            "distill": True, "train_subset": 128, "batch_size": 64}]}))
    out = tmp_path / "run"
    assert main(["compress", ckpt, "--recipe", str(p), "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    notes = rep["steps"][0]["notes"]
    assert notes["teacher"] == weights_sha256(tiny_model("resnet", seed=1)) != notes["input"]
    assert notes["input"] == weights_sha256(tiny_model("resnet"))
    assert json.loads((out / "inputs.json").read_text())["teacher"] == notes["teacher"]
    # the teacher's weights changed since the run started: --resume refuses, nothing is touched
    save_checkpoint(other, tiny_model("resnet", seed=2))
    before = (out / "report.json").read_bytes()
    capsys.readouterr()
    assert main(["compress", ckpt, "--recipe", str(p), "--out", str(out), "--resume"]) == 2
    assert "the teacher differs" in capsys.readouterr().err and (out / "report.json").read_bytes() == before
    # no checkpoint at the path; a teacher scoring 10 classes on this 43-class data
    for teacher, says in ((tmp_path / "nowhere", "model.json missing"), (tmp_path / "t10", "this data has 43")):
        if teacher.name == "t10":
            save_checkpoint(teacher, build_model(default_spec("resnet", 0.25, num_classes=10)))
        probe = {"evaluation": EVAL, "teacher": str(teacher), "steps": [{"type": "probe-teacher"}]}
        p.write_text(yaml.safe_dump(probe))
        assert main(["compress", ckpt, "--recipe", str(p), "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert "recipe key 'teacher'" in err and says in err and "Traceback" not in err, err
        assert not (tmp_path / "bad").exists()


def test_recipe_teacher_list_teaches_as_the_mean_of_its_members(tmp_path, ckpt, capsys, monkeypatch):
    """``teacher: [a, b]`` distils from one TeacherEnsemble whose logits are the members' mean (the inputs
    fingerprint covers both), in the ``distill`` step too (it once distilled from the input model whatever the
    recipe said); a bad member is refused naming it, an empty list naming the key, nothing written."""
    members = [tiny_model("resnet", seed=1), tiny_model("vgg", seed=2)]
    folders = [str(save_checkpoint(tmp_path / f"t{i}", m)) for i, m in enumerate(members)]
    taught_by = []
    real = student_module.distill
    monkeypatch.setattr(student_module, "distill",
                        lambda student, teacher, *a, **k: taught_by.append(weights_sha256(teacher)) or real(
                            student, teacher, *a, **k))
    p = tmp_path / "e.yaml"
    p.write_text(yaml.safe_dump({"evaluation": EVAL, "teacher": folders, "steps": [
        {"type": "probe-teacher"},
        {"type": "distill", "arch": "resnet", "width": 0.25, "epochs": 1, "train_subset": 128, "batch_size": 64}]}))
    out = tmp_path / "run"
    assert main(["compress", ckpt, "--recipe", str(p), "--out", str(out)]) == 0
    ensemble = TeacherEnsemble(members)
    notes = json.loads((out / "report.json").read_text())["steps"][0]["notes"]
    assert notes["teacher"] == weights_sha256(ensemble) == json.loads((out / "inputs.json").read_text())["teacher"]
    assert taught_by == [notes["teacher"]]
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        want = (members[0].eval()(x) + members[1].eval()(x)) / 2
        assert torch.allclose(ensemble.eval()(x), want, atol=1e-6)
    for teacher, says in (([folders[0], str(tmp_path / "nowhere")], "nowhere): "),
                          ([], "key 'teacher'")):
        p.write_text(yaml.safe_dump({"evaluation": EVAL, "teacher": teacher, "steps": [{"type": "probe-teacher"}]}))
        capsys.readouterr()
        assert main(["compress", ckpt, "--recipe", str(p), "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "bad").exists()


def test_feature_pair_naming_no_module_is_a_one_line_bad_input(tmp_path, ckpt, capsys):
    """A misspelt feature-transfer module is the user's mistake: exit 2 naming the step and the pair."""
    steps = [{"type": "finetune", "epochs": 1, "distill": True, "train_subset": 64,
              "feature_pairs": [["blocks.0", "blokcs.1"]]}]
    assert main(["compress", ckpt, "--recipe", _recipe(tmp_path, steps), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "step 0 (finetune)" in err and "'blokcs.1'" in err and "no such module" in err
    assert "Traceback" not in err


def test_newly_missed_carries_the_baselines_confidence():
    """The report's evidence: each newly missed safety-critical image with the baseline's true-class
    probability, counted as a near coin flip below 0.5 in report.html; without the key, no probability."""
    from types import SimpleNamespace

    import numpy as np

    from drivecompress.pipeline.runner import missed_caption, newly_missed
    from drivecompress.report.html import gate_evidence

    data = SimpleNamespace(safety_critical={0, 1}, class_names=["stop", "yield", "other"])
    test = SimpleNamespace(y=np.array([0, 0, 1, 2, 1]))
    base = {"predictions": [0, 0, 1, 2, 0], "true_class_probability": [0.9, 0.31, 0.95, 0.8, 0.2]}
    final = {"predictions": [0, 1, 2, 0, 0]}  # loses 1 and 2 (safety), 3 (not safety); 4 was already wrong
    missed = newly_missed(base, final, test, data)
    assert [(m["index"], m["true"], m["predicted"], m["baseline_probability"]) for m in missed] == [
        (1, "stop", "yield", 0.31), (2, "yield", "other", 0.95)]
    assert missed_caption(missed[0]) == "stop → yield\n(baseline p 0.31)"
    page = gate_evidence({"gate": {}, "newly_missed_safety": missed}, "cG5n")
    assert "2 safety-critical test image(s)" in page and " 1 of them the baseline itself" in page
    plain = newly_missed({"predictions": base["predictions"]}, final, test, data)
    assert "baseline_probability" not in plain[0] and missed_caption(plain[0]) == "stop → yield"
    # with physical signs known, frames of one sign sit together (by class, then sign) and say which sign
    by_sign = newly_missed(base, {"predictions": [1, 1, 2, 0, 0]}, test, data, groups=np.array([7, 3, 5, 5, 5]))
    assert [(m["index"], m["sign"]) for m in by_sign] == [(1, 3), (0, 7), (2, 5)]
    assert missed_caption(by_sign[0]) == "stop → yield\nsign 3 (baseline p 0.31)"

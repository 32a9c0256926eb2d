"""Architecture search: quick mode, two worker processes on one study (no duplicated or lost trials), and a
killed worker whose trial is retried by the next worker."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest
import torch
from optuna.trial import TrialState

from drivecompress.cli import main


def _worker(out, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "drivecompress", "search", "--out", str(out), "--quick", "--json",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _study(out):
    return optuna.load_study(study_name="drivecompress-search", storage=f"sqlite:///{out / 'study.db'}")


def test_two_workers_share_one_study_without_duplicates(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    first = _worker(out, "--trials", "4")
    time.sleep(3)  # let the first worker create the study
    second = _worker(out, "--trials", "4", "--resume")
    for p in (first, second):
        _, err = p.communicate(timeout=400)
        assert p.returncode == 0, err[-2000:]
    trials = _study(out).trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert 4 <= len(finished) <= 5  # the cap is checked by each worker before it starts a trial
    assert len({t.number for t in trials}) == len(trials)
    folders = sorted(p.name for p in (out / "trials").iterdir())
    assert folders == sorted(f"{t.number:04d}" for t in finished if t.state == TrialState.COMPLETE)
    doc = json.loads((out / "pareto.json").read_text())
    assert doc["pareto"] and all(r["int8_latency_ms_serial"] is not None for r in doc["pareto"])
    assert doc["teacher_fp32_latency_ms"] > 0  # measured in the same interleaved rounds as the front
    for r in doc["pareto"]:  # a ratio of raw p50s in the same rounds; the latency is against the reference graph
        raw = r["int8_latency_ms_serial_raw"]
        assert r["speedup_vs_teacher_fp32"] == round(doc["teacher_fp32_latency_ms"] / raw, 3)
        assert 0 < r["int8_latency_ms_serial"] != r["int8_latency_ms_serial_raw"]
    assert (out / "latency_reference.onnx").is_file()
    assert "Pareto front" in (out / "report.html").read_text() or (out / "report.html").stat().st_size > 1000


def test_a_joining_worker_samples_its_own_networks_and_a_new_study_is_reproducible(tmp_path):
    """Workers on one study must not share the sampler's random stream (with one seed, the second worker's
    NSGA-II repeated every network of the first); the worker that creates a study keeps the seed, so the same
    command finds the same trials."""
    from drivecompress.search.nas import SearchConfig, open_study

    cfg = SearchConfig.quick_config()

    def first_draw(study):
        trial = study.ask()
        value = trial.suggest_int("x", 0, 10**9)
        study.tell(trial, [0.5, 1.0, 1.0])
        return value

    url = f"sqlite:///{tmp_path / 'a.db'}"
    creator_study = open_study(url, cfg, create=True)
    # a second worker started together with the creator: the study exists but holds no trial yet
    together = open_study(url, cfg, create=True)
    creator = first_draw(creator_study)
    assert first_draw(together) != creator
    assert first_draw(open_study(url, cfg, create=False)) != creator  # a --resume worker
    assert first_draw(open_study(url, cfg, create=True)) != creator  # one started without --resume, study exists
    assert first_draw(open_study(f"sqlite:///{tmp_path / 'b.db'}", cfg, create=True)) == creator  # same seed
    other = first_draw(open_study(f"sqlite:///{tmp_path / 'c.db'}", SearchConfig.quick_config(seed=7), create=True))
    assert other != creator


def _running_sampled_trials(db) -> list[int]:
    """Numbers of RUNNING trials whose architecture is fully sampled, read from the SQLite file read-only: an
    observer opening it through Optuna writes the schema and raced the worker creating it (seen twice in CI)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return []
    try:
        return [n for (n,) in con.execute(
            "SELECT t.number FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
            "WHERE t.state = 'RUNNING' AND a.key = 'macs'")]
    except sqlite3.Error:  # no tables yet
        return []
    finally:
        con.close()


def test_a_killed_workers_trial_is_retried_by_the_next_worker(tmp_path):
    out = tmp_path / "s"
    victim = _worker(out, "--trials", "3")
    deadline = time.time() + 300
    running = []
    while time.time() < deadline and not running and victim.poll() is None:
        time.sleep(0.5)
        if (out / "study.db").exists():
            running = _running_sampled_trials(out / "study.db")
    if not running:
        victim.kill()
        _, err = victim.communicate()
        raise AssertionError(f"no trial started (worker exit code {victim.returncode}): {err[-2000:]}")
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    killed = next(t for t in _study(out).trials if t.number == running[0])
    time.sleep(6)  # past the heartbeat grace period of --quick (4 s)
    rescuer = _worker(out, "--trials", "3", "--resume")
    _, err = rescuer.communicate(timeout=400)
    assert rescuer.returncode == 0, err[-2000:]
    trials = _study(out).trials
    failed = next(t for t in trials if t.number == killed.number)
    assert failed.state == TrialState.FAIL and failed.params
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retried and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == failed.params == killed.params  # the same architecture, trained again


def test_finalists_are_trained_quantized_gated_and_resumed(mini_data, tmp_path, monkeypatch):
    """The finalize phase runs each finalist's written recipe through the compress runner (distill + QAT, the
    gate); a second call on the finished study trains nothing again and reads the finalists back. The teacher is
    a user's own network (not from the zoo), given through the Python API as the CLI cannot rebuild it."""
    import yaml

    import drivecompress.pipeline.runner as runner
    from drivecompress.pipeline.recipe import parse_recipe
    from drivecompress.search.nas import SearchConfig, search

    from .nets import BranchNet

    teacher = BranchNet(num_classes=mini_data.num_classes).eval()
    cfg = SearchConfig.quick_config(trials=3, finalists=2, final_test_subset=200)
    doc = search(teacher, mini_data, tmp_path / "s", cfg)
    rows = doc["finalists"]
    assert 1 <= len(rows) <= 2 and len(rows) == min(2, len(doc["pareto"]))
    assert [r["trial"] for r in rows] == [r["trial"] for r in sorted(doc["pareto"], key=lambda r: -r["proxy_accuracy"])
                                          ][:len(rows)]
    for r in rows:
        recipe = yaml.safe_load(Path(r["recipe"]).read_text())
        assert [s["type"] for s in parse_recipe(recipe).resolved()["steps"]] == ["distill", "qat"]
        rep = json.loads((tmp_path / "s" / "finalists" / f"{r['trial']:04d}" / "run" / "report.json").read_text())
        assert r["accuracy"] == rep["final"]["accuracy"] and r["gate_passed"] == rep["gate"]["passed"]
        assert r["speedup"] > 0 and r["train_seconds"]["distill"] > 0
    assert doc["spearman_proxy_vs_full"] is None  # fewer than three finalists: no correlation claimed
    assert set(doc["phases"]) == {"search_s", "remeasure_s", "finalists_s"}
    assert (tmp_path / "s" / "recipe.yaml").exists() == (doc["chosen"] is not None)
    html = (tmp_path / "s" / "report.html").read_text()
    assert "Finalists" in html
    for r in rows:  # the report links each finalist's own run report, relative to the search folder
        link = f"finalists/{r['trial']:04d}/run/report.html"
        assert link in html and (tmp_path / "s" / link).is_file()

    _ship_and_load(tmp_path, doc, monkeypatch)

    monkeypatch.setattr(runner, "run_recipe", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    again = search(teacher, mini_data, tmp_path / "s", cfg, resume=True)
    assert [(r["trial"], r["accuracy"]) for r in again["finalists"]] == [(r["trial"], r["accuracy"]) for r in rows]
    assert again["phases"]["search_s"] == doc["phases"]["search_s"] > 0  # the proxy phase's time is kept
    # read back in a moment, each finalist keeps the time its training took, and so does the phase
    assert [r["seconds"] for r in again["finalists"]] == [r["seconds"] for r in rows]
    assert again["phases"]["finalists_s"] == doc["phases"]["finalists_s"] == round(sum(r["seconds"] for r in rows), 1)
    # asked for fewer finalists later, the ones already trained stay in the table (and the correlation)
    one = search(teacher, mini_data, tmp_path / "s", cfg.model_copy(update={"finalists": 1}), resume=True)
    assert [r["trial"] for r in one["finalists"]] == [r["trial"] for r in rows]
    assert [r["seconds"] for r in one["finalists"]] == [r["seconds"] for r in rows]

    # a pareto.json that lost the times (an older version wrote 0.0): the study's own trial timestamps
    broken = dict(again, phases={"search_s": 0.0}, finalists=[])
    (tmp_path / "s" / "pareto.json").write_text(json.dumps(broken))
    third = search(teacher, mini_data, tmp_path / "s", cfg, resume=True)
    assert 0 < third["phases"]["search_s"] <= doc["phases"]["search_s"] + 1
    steps = [json.loads(Path(r["run"], "report.json").read_text())["steps"] for r in rows]
    assert [r["seconds"] for r in third["finalists"]] == [round(sum(s["seconds"] for s in st), 1) for st in steps]


def _ship_and_load(tmp_path, doc, monkeypatch):
    """A finalist shipped like baseline/ (checkpoint, int8 model.onnx, recipe, card) loads as 'searched'; a
    refused one only when named, never over an existing folder, never a trial that was not trained."""
    import pytest

    from drivecompress.errors import BadInputError
    from drivecompress.evaluate.loading import load_model_arg
    from drivecompress.search.ship import ship_finalist
    from drivecompress.utils.io import file_sha256

    row = doc["finalists"][0]
    if doc["chosen"] is None:
        with pytest.raises(BadInputError, match="no finalist passed the gate"):
            ship_finalist(tmp_path / "s", tmp_path / "searched")
    dest = ship_finalist(tmp_path / "s", tmp_path / "searched", trial=row["trial"], commands=["drivecompress search"])
    assert sorted(p.name for p in dest.iterdir()) == ["MODEL_CARD.md", "model.json", "model.onnx",
                                                      "model.safetensors", "recipe.yaml", "search.json"]
    rep = json.loads(Path(row["run"], "report.json").read_text())
    assert file_sha256(dest / "model.onnx") == file_sha256(Path(row["run"]) / rep["final"]["artifact"])
    card = (dest / "MODEL_CARD.md").read_text()
    assert f"Trial {row['trial']} of `drivecompress search`" in card and "searched/recipe.yaml" in card
    assert ("refused by the gate" in card) == (not row["gate_passed"])
    assert f"{100 * row['accuracy']:.2f}%" in card
    monkeypatch.setenv("DRIVECOMPRESS_SEARCHED", str(dest))
    loaded = load_model_arg("searched")
    assert loaded.module is not None and loaded.meta["spec"]["arch"] == json.loads(
        (dest / "search.json").read_text())["front_row"]["spec"]["arch"]
    assert load_model_arg(dest / "model.onnx").onnx_path is not None
    with pytest.raises(BadInputError, match="already exists"):
        ship_finalist(tmp_path / "s", dest, trial=row["trial"])
    with pytest.raises(BadInputError, match="not a finalist"):
        ship_finalist(tmp_path / "s", tmp_path / "other", trial=999)
    with pytest.raises(BadInputError, match="no readable search summary"):
        ship_finalist(tmp_path / "nowhere", tmp_path / "other")
    report = Path(row["run"], "report.json")
    report.rename(report.with_suffix(".moved"))
    with pytest.raises(BadInputError, match="run report is missing"):
        ship_finalist(tmp_path / "s", tmp_path / "other", trial=row["trial"])
    report.with_suffix(".moved").rename(report)
    assert not (tmp_path / "other").exists()

    # the same network trained by a longer recipe (a compress run; here a copy with its own figures) ships
    # instead of the finalist's run, and its card says so; a run of another network is refused
    longer = tmp_path / "longer"
    shutil.copytree(row["run"], longer)
    rep["final"]["accuracy"] = 0.4321
    (longer / "report.json").write_text(json.dumps(rep))
    (longer / "recipe.yaml").write_text((Path(row["recipe"]).read_text()).replace("epochs: 1", "epochs: 60"))
    dest = ship_finalist(tmp_path / "s", tmp_path / "retrained", trial=row["trial"], retrained=longer)
    shipped = json.loads((dest / "search.json").read_text())["shipped"]
    assert shipped == {"run": str(longer), "retrained": True, "accuracy": 0.4321, "gate_passed": row["gate_passed"]}
    assert (dest / "recipe.yaml").read_text() == (longer / "recipe.yaml").read_text() != Path(row["recipe"]).read_text()
    card = (dest / "MODEL_CARD.md").read_text()
    assert "trained by a longer recipe" in card and "43.21%" in card and f"{100 * row['accuracy']:.2f}%" in card
    rep["recipe"]["steps"][0]["spec"]["stem"] = 999
    (longer / "report.json").write_text(json.dumps(rep))
    with pytest.raises(BadInputError, match=f"does not train trial {row['trial']}'s network"):
        ship_finalist(tmp_path / "s", tmp_path / "other", trial=row["trial"], retrained=longer)
    assert not (tmp_path / "other").exists()


def test_proxy_phase_time_is_the_union_of_the_trials_running_time():
    """Two workers overlapping, then a resumed call an hour later: the proxy phase is the time some trial ran,
    neither the idle hour nor the overlap counted twice."""
    from datetime import datetime, timedelta
    from types import SimpleNamespace

    from drivecompress.search.summary import study_span

    t = datetime(2026, 11, 27, 12, 0, 0)

    def trial(a, b):
        return SimpleNamespace(datetime_start=t + timedelta(seconds=a),
                               datetime_complete=None if b is None else t + timedelta(seconds=b))

    trials = [trial(0, 100), trial(50, 120), trial(130, 200), trial(3800, 3900), trial(3850, None)]
    study = SimpleNamespace(get_trials=lambda deepcopy=False: trials)
    assert study_span(study) == 120 + 70 + 100  # [0, 120] + [130, 200] + [3800, 3900]; a running trial: no end yet


def test_the_proxy_starts_from_the_same_weights_whatever_the_process_drew_before(mini_data):
    """A trial's proxy is a function of the network and ``seed``: the initial weights too, not only the subset
    and batch order (before, one network and seed scored 61.75% in a search and 64.05% in bench_proxy)."""
    from drivecompress.search.meter import reference_spec
    from drivecompress.search.nas import SearchConfig, proxy_train

    from .nets import BranchNet

    teacher = BranchNet(num_classes=mini_data.num_classes).eval()
    spec = reference_spec(mini_data.num_classes)
    cfg = SearchConfig.quick_config()
    runs = []
    for draw in (1, 50):
        torch.manual_seed(123)
        torch.rand(draw)  # a different history of the global generator
        runs.append(proxy_train(spec, teacher, mini_data, cfg, torch.device("cpu")))
    (a, acc_a), (b, acc_b) = runs
    assert acc_a == acc_b
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_spearman_rank_correlation():
    from drivecompress.search.finalize import pick_finalists, spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert abs(spearman([1, 2, 3, 4], [4, 3, 2, 1]) + 1.0) < 1e-12
    assert abs(spearman([1, 2, 2, 3], [1, 2, 3, 4]) - 0.9486832980505138) < 1e-9  # scipy.stats.spearmanr
    assert spearman([1, 2], [2, 1]) is None and spearman([1, 1, 1], [1, 2, 3]) is None
    front = [{"trial": 0, "proxy_accuracy": 0.5, "speedup_vs_teacher_fp32": 12.0, "int8_latency_ms_serial": 0.15},
             {"trial": 1, "proxy_accuracy": 0.7, "speedup_vs_teacher_fp32": 4.0, "int8_latency_ms_serial": 0.45},
             {"trial": 2, "proxy_accuracy": 0.6, "speedup_vs_teacher_fp32": None},
             {"trial": 3, "proxy_accuracy": 0.55, "speedup_vs_teacher_fp32": 9.9, "int8_latency_ms_serial": 0.18}]
    assert [r["trial"] for r in pick_finalists(front, 2, None)] == [1, 2]
    assert [r["trial"] for r in pick_finalists(front, 2, 10.0)] == [0]
    # a budget in ms: the serial figure decides, a member without one is not fast enough, both limits apply
    assert [r["trial"] for r in pick_finalists(front, 3, None, 0.18)] == [3, 0]
    assert [r["trial"] for r in pick_finalists(front, 3, None, 0.5)] == [1, 3, 0]
    assert [r["trial"] for r in pick_finalists(front, 3, 10.0, 0.18)] == [0]


def test_resnet_space_can_put_a_block_at_full_resolution_in_front():
    """The searched ResNet may keep one block at 32x32 before the first drop (experiments/student-fullres.yaml's
    layout); the spec builds and classifies."""
    import torch

    from drivecompress.models.registry import build_model
    from drivecompress.search.space import sample_spec

    choice = {"family": "resnet", "stem": 16, "first_stride": 2, "width0": 48, "depth0": 1, "width1": 64,
              "depth1": 1, "width2": 96, "depth2": 1}
    plain = sample_spec(optuna.trial.FixedTrial({**choice, "full_res_block": False}), 43, None, False)
    front = sample_spec(optuna.trial.FixedTrial({**choice, "full_res_block": True}), 43, None, False)
    assert front["stages"][0] == {"stride": 1, "out": 16, "mids": [16], "projection": False}
    assert front["stages"][1:] == plain["stages"] and plain["stages"][0]["stride"] == 2
    assert build_model(front).eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 43)


def test_search_flags_are_checked_by_the_config_and_named(tmp_path, capsys):
    """A search flag outside SearchConfig's bounds: one line naming that flag, the bound and the value, exit 2,
    nothing written; the bounds live only in the config (commands/base.py config_from_flags)."""
    out = tmp_path / "s"
    for flag, value, expected in (
            ("--proxy-epochs", "0", "--proxy-epochs: must be greater than or equal to 1 (got 0)"),
            ("--proxy-images", "8", "--proxy-images: must be greater than or equal to 16 (got 8)"),
            ("--trials", "0", "--trials: must be greater than or equal to 1 (got 0)"),
            ("--budget-minutes", "0", "--budget-minutes: must be greater than 0 (got 0.0)"),
            ("--min-speedup", "-1", "--min-speedup: must be greater than 0 (got -1.0)"),
            ("--max-latency-ms", "0", "--max-latency-ms: must be greater than 0 (got 0.0)"),
            ("--final-epochs", "0", "--final-epochs: must be greater than or equal to 1 (got 0)"),
            ("--final-swa-epochs", "-1", "--final-swa-epochs: must be greater than or equal to 0 (got -1)"),
            ("--seed", "-1", "--seed: must be greater than or equal to 0 (got -1)")):
        assert main(["search", "--out", str(out), flag, value]) == 2
        assert capsys.readouterr().err.strip() == f"drivecompress: error: {expected}"
        assert not out.exists()
    # a rule across two flags is named by both flags
    assert main(["search", "--out", str(out), "--final-epochs", "10", "--final-swa-epochs", "10"]) == 2
    assert capsys.readouterr().err.strip() == ("drivecompress: error: --final-swa-epochs (10) must be fewer than "
                                               "--final-epochs (10)")
    assert not out.exists()


def test_final_teacher_teaches_the_finalists_and_is_checked_before_the_search(tmp_path, capsys):
    """``--final-teacher``: the finalists' recipes name it as their ``teacher:`` (several: a list, one ensemble),
    so the recipe that reproduces a finalist keeps its teacher; a folder that is no checkpoint is refused before
    the first proxy trial, one line naming the flag, nothing written."""
    from drivecompress.models import default_spec
    from drivecompress.pipeline.recipe import parse_recipe
    from drivecompress.search.finalize import candidate_recipe
    from drivecompress.search.nas import SearchConfig

    row = {"trial": 3, "proxy_accuracy": 0.5, "int8_latency_ms": 0.2, "spec": default_spec("resnet", 0.25)}
    for given, named in ((["baseline"], "baseline"), (["baseline", "runs/t1"], ["baseline", "runs/t1"]), ([], None)):
        doc = candidate_recipe(row, SearchConfig(final_teacher=given))
        assert doc.get("teacher") == named and list(doc)[2] == ("teacher" if given else "budgets")
        assert ("from baseline" in doc["description"]) == bool(given)
        assert parse_recipe(doc).teacher == named
    # --final-swa-epochs reaches the finalist's recipe; without it a quarter of the epochs, at most 8
    for cfg, swa in ((SearchConfig(final_epochs=120, final_swa_epochs=24), 24), (SearchConfig(final_epochs=120), 8),
                     (SearchConfig(final_epochs=20), 5)):
        step = candidate_recipe(row, cfg)["steps"][0]
        assert (step["epochs"], step["swa_epochs"]) == (cfg.final_epochs, swa)
    bad = tmp_path / "bad"
    assert main(["search", "--out", str(bad), "--quick", "--final-teacher", "baseline",
                 "--final-teacher", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("drivecompress: error: --final-teacher (") and "model.json missing" in err
    assert "\n" not in err and not bad.exists()


def test_enqueued_networks_are_the_first_trials_and_bad_ones_are_named(tmp_path, capsys):
    """``--enqueue``: a known network (here the quick space's smallest ResNet) is the study's first trial, with
    exactly those choices; a value outside the space, a missing or an unused parameter, or text that is not JSON
    is one line naming it, exit 2, nothing written."""
    net = {"family": "resnet", "stem": 16, "first_stride": 2, "full_res_block": False, "width0": 16, "depth0": 1,
           "width1": 32, "depth1": 1, "width2": 48, "depth2": 1}
    bad = tmp_path / "bad"
    for text, expected in ((json.dumps({**net, "width0": 50}), "not in the search space"),
                           (json.dumps({k: v for k, v in net.items() if k != "depth2"}), "'depth2' is not found"),
                           (json.dumps({**net, "mb_head": 64}), "parameters this network does not use: mb_head"),
                           ("{family: resnet", "not JSON")):
        assert main(["search", "--out", str(bad), "--quick", "--enqueue", text]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("drivecompress: error: --enqueue" if text.startswith("{f") else
                              "drivecompress: error: enqueue") and expected in err and "\n" not in err
        assert not bad.exists()
    out = tmp_path / "s"
    assert main(["search", "--out", str(out), "--quick", "--json", "--trials", "2", "--enqueue", json.dumps(net)]) == 0
    capsys.readouterr()
    first = min(_study(out).trials, key=lambda t: t.number)
    assert first.params == net and first.state == TrialState.COMPLETE


def test_budget_minutes_stops_a_trial_during_its_proxy_training(tmp_path, capsys):
    """Optuna's timeout waits for a running trial; the budget is also checked after each proxy epoch, so a
    worker whose budget ran out stops within one epoch, its trial pruned and marked, not counted as complete."""
    out = tmp_path / "s"
    assert main(["search", "--out", str(out), "--quick", "--json", "--trials", "3", "--budget-minutes", "0.0001"]) == 0
    capsys.readouterr()
    trials = _study(out).trials
    assert len(trials) == 1
    assert trials[0].state == TrialState.PRUNED and trials[0].user_attrs["stopped_by_budget"] == 1


def test_families_narrow_the_space_and_a_study_keeps_its_families(tmp_path, capsys):
    """``--families resnet``: every trial samples a ResNet and the summary says which families were searched; a
    worker or resume asking for other families, an unknown or repeated family, or an enqueued network of a
    family not searched is one line, exit 2, and adds no trial."""
    out = tmp_path / "s"
    assert main(["search", "--out", str(out), "--quick", "--json", "--trials", "3", "--families", "resnet"]) == 0
    capsys.readouterr()
    trials = _study(out).trials
    assert len(trials) == 3 and {t.params["family"] for t in trials} == {"resnet"}
    assert json.loads((out / "pareto.json").read_text())["families"] == ["resnet"]
    assert main(["search", "--out", str(out), "--quick", "--resume", "--trials", "4",
                 "--families", "resnet,mobilenetv2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "the study searches families resnet" in err and "\n" not in err and len(_study(out).trials) == 3
    bad = tmp_path / "bad"
    net = {"family": "mobilenetv2", "stem": 16, "first_stride": 2}
    for args, expected in ((["--families", "resnet,foo"], "--families: must be 'resnet' or 'mobilenetv2' (got 'foo')"),
                           (["--families", "resnet,resnet"], "--families ['resnet', 'resnet']: each family once"),
                           (["--families", ""], "--families: List should have at least 1 item"),
                           (["--families", "resnet", "--enqueue", json.dumps(net)], "'mobilenetv2' is not searched")):
        assert main(["search", "--out", str(bad), "--quick", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err and not bad.exists()


def test_a_worker_joining_an_empty_study_waits_for_its_families(monkeypatch):
    """A worker started together with the creator may see the study before the creator has recorded its
    families: it waits for them rather than recording its own (which would let two workers search different
    families on one study); a study whose creator died before recording them takes the joiner's."""
    from types import SimpleNamespace

    from drivecompress.errors import BadInputError
    from drivecompress.search import nas

    monkeypatch.setattr(nas.time, "sleep", lambda s: None)

    class Study:
        def __init__(self, appear_after):
            self.reads, self.appear_after, self.written = 0, appear_after, None

        @property
        def user_attrs(self):
            self.reads += 1
            return {"families": ["resnet"]} if self.appear_after is not None and self.reads > self.appear_after else {}

        def get_trials(self, deepcopy=False):
            return []

        def set_user_attr(self, key, value):
            self.written = value

    late = Study(appear_after=2)
    with pytest.raises(BadInputError, match="the study searches families resnet"):
        nas._check_families(late, SimpleNamespace(families=["resnet", "mobilenetv2"]), "sqlite:///x")
    assert late.reads == 3 and late.written is None
    orphan = Study(appear_after=None)
    clock = iter(range(0, 100, 2))
    monkeypatch.setattr(nas.time, "monotonic", lambda: next(clock))
    nas._check_families(orphan, SimpleNamespace(families=["resnet"]), "sqlite:///x")
    assert orphan.written == ["resnet"]


def test_an_onnx_teacher_is_searched_from_and_is_the_latency_reference(tmp_path, capsys):
    """``search --teacher model.onnx``: the proxy and the finalists distil from the graph through ONNX Runtime,
    the front's speed-ups are against that very file (no re-export), and a finalist's run measures and gates
    against it. With ``--max-latency-ms`` the screen and the reference graph take the students' per-image
    normalization (an ONNX teacher's own is hidden in its graph)."""
    from drivecompress.data.transforms import deploy_input
    from drivecompress.export.onnx import export_onnx

    from .nets import BranchNet

    src = export_onnx(BranchNet(num_classes=43).eval(), tmp_path / "team.onnx",
                      deploy_input(np.zeros((4, 32, 32, 3), np.uint8))).path
    out = tmp_path / "s"
    assert main(["search", "--out", str(out), "--quick", "--json", "--trials", "2", "--teacher", str(src),
                 "--finalists", "1", "--max-latency-ms", "1000"]) == 0, capsys.readouterr().err[-2000:]
    res = json.loads(capsys.readouterr().out)
    trials = _study(out).trials
    assert all(t.user_attrs["untrained_int8_latency_ms"] > 0 and t.user_attrs["spec"]["input_norm"]["per_image"]
               for t in trials)
    ref = onnx.load(str(out / "latency_reference.onnx"))
    assert ref.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 43
    doc = json.loads((out / "pareto.json").read_text())
    assert doc["teacher_fp32_latency_ms"] > 0 and not (out / "teacher_fp32.onnx").exists()
    assert all(r["speedup_vs_teacher_fp32"] > 0 for r in doc["pareto"])
    (row,) = res["finalists"]
    run = out / "finalists" / f"{row['trial']:04d}" / "run"
    assert (run / "baseline.onnx").read_bytes() == src.read_bytes()
    assert json.loads((run / "report.json").read_text())["steps"][0]["notes"]["student"]["input_norm"]["per_image"]


def test_max_latency_ms_screens_networks_untrained_and_they_do_not_count_as_trials(tmp_path, capsys, monkeypatch):
    """With a latency budget a sampled network is quantized and timed before training: one over the budget
    twice (the second timing in twice the rounds) is pruned at once (marked ``screened_ms``, no proxy epoch,
    not one of ``--trials``); one within is trained and keeps its untrained timing; one slow only in its first
    timing (a slow spell of the machine) is trained too, its first figure kept. A budget no network meets stops
    after SCREEN_CAP x trials samples, warned. The timing is faked per screened graph (screening times in a
    scratch folder) so that which networks pass is known."""
    from drivecompress.search import meter, nas

    graphs: dict[str, list[float]] = {}  # each screened graph's remaining timings
    rounds_seen = []

    def fake(paths, *a, rounds=5, **k):
        out = {"reference": {"latency_ms_p50": 1.0, "round_medians_ms": [1.0] * rounds}}
        if "int8" in paths:
            ms = 0.5
            if "drivecompress-screen-" in str(paths["int8"]):
                rounds_seen.append(rounds)
                left = graphs.setdefault(str(paths["int8"]), list(plan[len(graphs) % len(plan)]))
                ms = left.pop(0) if len(left) > 1 else left[0]
            out["int8"] = {"latency_ms_p50": ms, "round_medians_ms": [ms] * rounds}
        return out

    monkeypatch.setattr(meter, "side_by_side", fake)
    plan = [[5.0, 5.0], [0.5], [5.0, 0.5]]  # over twice; within; over once, then within
    out = tmp_path / "s"
    assert main(["search", "--out", str(out), "--quick", "--json", "--trials", "3", "--max-latency-ms", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    trials = _study(out).trials
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    screened = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(done) == 3 and len(screened) == 2
    assert all(t.user_attrs["screened_ms"] == 5.0 and "train_seconds" not in t.user_attrs for t in screened)
    assert all(t.user_attrs["untrained_int8_latency_ms"] == 0.5 and "screened_ms" not in t.user_attrs for t in done)
    assert [t.user_attrs.get("untrained_int8_first_latency_ms") for t in done] == [None, 5.0, None]
    assert rounds_seen == [5, 10, 5, 5, 10, 5, 10, 5]  # only a timing over the budget is timed again
    assert doc["trials"] == {"complete": 3, "pruned": 2, "screened_by_latency": 2}
    assert not (out / "trials" / f"{screened[0].number:04d}").exists()

    plan = [[5.0]]
    never = tmp_path / "never"
    with pytest.warns(UserWarning, match="--max-latency-ms 1.0: 20 sampled networks were slower"):
        assert main(["search", "--out", str(never), "--quick", "--json", "--trials", "2", "--max-latency-ms", "1"]) == 0
    capsys.readouterr()
    trials = _study(never).trials
    assert len(trials) == nas.SCREEN_CAP * 2 and all("screened_ms" in t.user_attrs for t in trials)


def test_the_reference_meter_cancels_a_machine_that_slows_down(tmp_path, mini_data, monkeypatch):
    """A network's latency is its per-round ratio to the reference int8 graph times the reference's quiet
    latency: when the whole machine runs 1.5x slower the figure stays; a quieter reference round lowers the
    quiet latency for every later figure. The reference graph is real (quantized, same in every call)."""
    from drivecompress.evaluate.predictor import OnnxPredictor
    from drivecompress.search import meter

    slow = {"factor": 1.0, "ref": None}

    def fake(paths, *a, rounds=5, **k):
        f = slow["factor"]
        out = {"reference": {"latency_ms_p50": f, "round_medians_ms": slow["ref"] or [f] * rounds}}
        if "int8" in paths:
            out["int8"] = {"latency_ms_p50": 0.4 * f, "round_medians_ms": [0.4 * f] * rounds}
        return out

    monkeypatch.setattr(meter, "side_by_side", fake)
    m = meter.ReferenceMeter(mini_data, runs=20, folder=tmp_path)
    first = m.path.read_bytes()
    assert OnnxPredictor(m.path).input_shape == mini_data.input_shape and m.quiet_ms == 1.0
    assert meter.ReferenceMeter(mini_data, runs=20, folder=tmp_path).path.read_bytes() == first
    slow["factor"] = 1.5
    lat = m(tmp_path / "any.onnx")
    assert lat["ms"] == pytest.approx(0.4) and lat["raw_ms"] == pytest.approx(0.6)
    assert lat["ratio"] == pytest.approx(0.4)
    slow["ref"] = [1.5, 0.8, 1.5, 1.5, 1.5]  # one quiet round of the reference
    assert m(tmp_path / "any.onnx")["reference_quiet_ms"] == 0.8 and m.quiet_ms == 0.8

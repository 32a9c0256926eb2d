"""A run folder that cannot lie, and no traceback for a user's mistake: the lock, --resume's input and artifact
checks, the YAML loader's limits, range-checked options, and property-based fuzzing of recipe parsing."""

import contextlib
import json
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivecompress.cli import main
from drivecompress.errors import BadInputError
from drivecompress.pipeline.recipe import load_recipe, load_yaml, parse_recipe
from drivecompress.train.checkpoint import save_checkpoint
from drivecompress.utils.io import file_sha256
from drivecompress.utils.runlock import LOCK_NAME, RunLock

from .conftest import tiny_model

EVAL = {"test_subset": 200, "latency_runs": 10, "throughput_seconds": 0.2}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture()
def ckpt(tmp_path):
    return str(save_checkpoint(tmp_path / "ck", tiny_model("vgg")))


def _recipe(tmp_path, steps=None, name="r.yaml") -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump({"evaluation": EVAL, "steps": steps or [{"type": "ptq", "calibration_images": 32}]}))
    return str(p)


def _exit2(capsys, argv, root: Path, needle: str) -> None:
    before = snapshot(root)
    capsys.readouterr()  # drop what earlier commands printed
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert snapshot(root) == before, "a refused command changed files on disk"


def test_resume_refuses_another_model_and_a_tampered_artifact(tmp_path, ckpt, capsys):
    recipe = _recipe(tmp_path)
    out = tmp_path / "run"
    assert main(["compress", ckpt, "--recipe", recipe, "--out", str(out)]) in (0, 3)
    report = json.loads((out / "report.json").read_text())
    for rel, digest in report["checksums"].items():  # every artifact's sha256 is in report.json
        assert file_sha256(out / rel) == digest, rel
    other = str(save_checkpoint(tmp_path / "other", tiny_model("vgg", seed=1)))
    _exit2(capsys, ["compress", other, "--recipe", recipe, "--out", str(out), "--resume"], tmp_path,
           "the model differs")
    artifact = out / "steps" / "00-ptq" / "model.onnx"
    artifact.write_bytes(artifact.read_bytes()[:-10] + b"0123456789")
    _exit2(capsys, ["compress", ckpt, "--recipe", recipe, "--out", str(out), "--resume"], tmp_path,
           "changed since the step completed")


def test_a_live_lock_refuses_a_second_writer_and_a_stale_one_is_taken_over(tmp_path, ckpt, capsys):
    recipe = _recipe(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out):  # held by this (live) process
        _exit2(capsys, ["compress", ckpt, "--recipe", recipe, "--out", str(out)], tmp_path, "in use by another")
    assert not (out / LOCK_NAME).exists()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": os.uname().nodename, "since": "x"}))
    assert main(["compress", ckpt, "--recipe", recipe, "--out", str(out)]) in (0, 3)  # stale: its process is gone
    assert not (out / LOCK_NAME).exists() and (out / "report.json").exists()


@pytest.mark.parametrize("override, needle", [
    ("evaluation.test_subset=0", "test_subset"),
    ("evaluation.test_subset=-5", "test_subset"),
    ("evaluation.latency_runs=0", "latency_runs"),
    ("evaluation.throughput_seconds=0", "throughput_seconds"),
    ("steps.0.exclude=[unclosed", "not valid YAML"),
    ("steps.0.calibration_images=&a [1]", "calibration_images"),
    ("steps.9.x=1", "not a step index"),
])
def test_bad_overrides_exit_2_before_anything_is_written(tmp_path, ckpt, capsys, override, needle):
    _exit2(capsys, ["compress", ckpt, "--recipe", _recipe(tmp_path), "--out", str(tmp_path / "run"), "--set",
                    override], tmp_path, needle)
    assert not (tmp_path / "run").exists()


def test_alias_bomb_and_non_utf8_recipes_are_refused_quickly(tmp_path, ckpt, capsys):
    bomb = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
              for i in range(1, 12)]
    bomb.write_text("\n".join(lines) + "\nsteps: [{type: ptq}]\n")
    _exit2(capsys, ["compress", ckpt, "--recipe", str(bomb), "--out", str(tmp_path / "run")], tmp_path,
           "aliases (*name) are not allowed")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\nsteps: [{type: ptq}]\n".encode("latin-1"))
    _exit2(capsys, ["compress", ckpt, "--recipe", str(latin), "--out", str(tmp_path / "run")], tmp_path, "not UTF-8")
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * 1_100_000 + "\nsteps: [{type: ptq}]\n")
    with pytest.raises(BadInputError, match="at most"):
        load_recipe(huge)


# Property-based: whatever the text, recipe parsing ends in a Recipe or a BadInputError (a one-line exit 2 in the
# CLI), never another exception.
_yaml_text = st.one_of(
    st.text(max_size=200),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                 max_leaves=12).map(lambda d: yaml.safe_dump({"steps": [d]} if isinstance(d, dict) else d)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_yaml_text)
def test_fuzzed_recipe_text_never_escapes_as_another_exception(text):
    try:
        parse_recipe(load_yaml(text, "fuzz.yaml"), "fuzz.yaml")
    except BadInputError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_fuzzed_set_overrides_never_escape_as_another_exception(assignment):
    doc = {"steps": [{"type": "ptq"}], "evaluation": {"test_subset": 10}}
    with contextlib.suppress(BadInputError):  # anything else fails the test
        parse_recipe(doc, "fuzz.yaml", [assignment])

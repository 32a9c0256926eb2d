import pytest
import yaml

from drivecompress.data.gtsrb import repo_root
from drivecompress.errors import BadInputError
from drivecompress.pipeline.recipe import load_recipe, parse_recipe
from drivecompress.quant.ptq import PTQConfig


def _write(tmp_path, doc) -> str:
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(doc))
    return str(p)


def test_shipped_recipes_validate():
    paths = sorted((repo_root() / "recipes").glob("*.yaml"))
    shipped = {"default", "int8-ptq", "int8-qat", "prune-structured", "prune-unstructured", "distill-student",
               "prune-qat"}
    assert {p.stem for p in paths} >= shipped
    resolved = {}
    for path in paths:
        r = load_recipe(path)
        resolved[path.stem] = r.resolved()
        assert r.steps and [s["type"] for s in resolved[path.stem]["steps"]] == [kind for kind, _ in r.steps]
    # prune-qat repeats prune-structured's prune step (recipes have no includes): keep the two in step
    assert resolved["prune-qat"]["steps"][0] == resolved["prune-structured"]["steps"][0]


def test_defaults_are_filled_in():
    r = parse_recipe({"steps": [{"type": "ptq"}]})
    kind, cfg = r.steps[0]
    assert kind == "ptq" and isinstance(cfg, PTQConfig) and cfg.calibration == "percentile"
    assert r.resolved()["steps"][0]["calibration_images"] == 512


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"steps": [{"type": "warp-drive"}]}, "step 0: unknown step type 'warp-drive'"),
        ({"steps": [{"type": "ptq", "calibraton": "minmax"}]}, "step 0 (ptq): unknown key 'calibraton'"),
        ({"steps": [{"type": "ptq", "calibration_images": "many"}]}, "key 'calibration_images'"),
        ({"steps": [{"type": "ptq", "calibration": "magic"}]}, "key 'calibration'"),
        ({"steps": [{"type": "finetune", "epochs": 0}]}, "step 0 (finetune): key 'epochs'"),
        ({"steps": [{"type": "finetune", "distill": False, "mixup": 0.5}]},
         "step 0 (finetune): mixup needs distill: true"),  # a rule across keys: its message names them
        ({"steps": [{"calibration": "minmax"}]}, "needs a 'type'"),
        ({"steps": []}, "'steps' must be a non-empty list"),
        ({"steps": [{"type": "ptq"}], "budgets": {"max_acc_drop": 1}}, "unknown key 'budgets.max_acc_drop'"),
        ({"steps": [{"type": "ptq"}], "budgets": {"max_accuracy_drop": "lots"}}, "key 'budgets.max_accuracy_drop'"),
    ],
)
def test_validation_errors_name_file_step_and_key(tmp_path, doc, needle):
    path = _write(tmp_path, doc)
    with pytest.raises(BadInputError) as info:
        load_recipe(path)
    assert path in str(info.value) and needle in str(info.value)


def test_set_overrides_are_type_checked(tmp_path):
    path = _write(tmp_path, {"steps": [{"type": "finetune"}, {"type": "ptq"}]})
    r = load_recipe(path, ["steps.1.calibration=entropy", "budgets.max_accuracy_drop=0.4"])
    assert r.steps[1][1].calibration == "entropy" and r.budgets.max_accuracy_drop == 0.4
    with pytest.raises(BadInputError, match="key 'epochs'"):
        load_recipe(path, ["steps.0.epochs=two"])
    with pytest.raises(BadInputError, match="unknown key 'ratio'"):
        load_recipe(path, ["steps.1.ratio=0.4"])
    with pytest.raises(BadInputError, match="not a step index"):
        load_recipe(path, ["steps.5.lr=0.1"])
    with pytest.raises(BadInputError, match="KEY=VALUE"):
        load_recipe(path, ["steps.0.lr"])


def test_bad_files(tmp_path):
    with pytest.raises(BadInputError, match="recipe file not found"):
        load_recipe(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [unclosed")
    with pytest.raises(BadInputError, match="not valid YAML"):
        load_recipe(bad)
    bad.write_text("- just a list")
    with pytest.raises(BadInputError, match="a recipe is a mapping"):
        load_recipe(bad)


def test_prune_steps_validate():
    r = parse_recipe({"steps": [{"type": "prune", "ratio": 0.4, "importance": "taylor"},
                                {"type": "unstructured", "sparsity": 0.8}, {"type": "ptq"}]})
    assert [k for k, _ in r.steps] == ["prune", "unstructured", "ptq"]
    with pytest.raises(BadInputError, match="key 'ratio'"):
        parse_recipe({"steps": [{"type": "prune", "ratio": 1.5}]})
    with pytest.raises(BadInputError, match="key 'importance'"):
        parse_recipe({"steps": [{"type": "prune", "importance": "vibes"}]})

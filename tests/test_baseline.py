"""The shipped baseline: loads without pickle, and its recorded accuracy holds on the test set."""

import pytest

from drivecompress.data.dataset import LabeledImages
from drivecompress.evaluate.loading import baseline_dir, load_model_arg
from drivecompress.evaluate.measure import evaluate_predictor


def test_baseline_checks_out_on_a_test_subset(gtsrb):
    model = load_model_arg("baseline")
    recorded = model.meta["metrics"]["test_accuracy"]
    assert recorded > 0.95  # a trained GTSRB model, not a placeholder
    subset = LabeledImages.of(gtsrb.x_test, gtsrb.y_test).head(2000, seed=123)
    got = evaluate_predictor(model.predictor(), subset)["accuracy"]
    # 2,000 images: binomial std at 98% is ~0.3 points; 1.2 points is a 4-sigma band
    assert abs(got - recorded) < 0.012
    assert (baseline_dir() / "MODEL_CARD.md").exists()


@pytest.mark.slow
def test_baseline_full_test_set(gtsrb):
    model = load_model_arg("baseline")
    m = evaluate_predictor(model.predictor(), LabeledImages.of(gtsrb.x_test, gtsrb.y_test))
    assert m["accuracy"] == pytest.approx(model.meta["metrics"]["test_accuracy"], abs=3 / 12630)


def test_shipped_searched_model_checks_out(gtsrb):
    """searched/ (the architecture search's shipped finalist): its int8 deploy model scores what the search's
    run recorded, its checkpoint loads as 'searched', and its card states the search and the recipe."""
    import json

    from drivecompress.evaluate.loading import searched_dir

    shipped = json.loads((searched_dir() / "search.json").read_text())
    subset = LabeledImages.of(gtsrb.x_test, gtsrb.y_test).head(2000, seed=123)
    int8 = evaluate_predictor(load_model_arg(searched_dir() / "model.onnx").predictor(), subset)["accuracy"]
    assert abs(int8 - shipped["shipped"]["accuracy"]) < 0.012  # 4-sigma band on 2,000 images
    model = load_model_arg("searched")
    assert model.module is not None and model.source == searched_dir()
    assert evaluate_predictor(model.predictor(), subset)["accuracy"] > 0.95  # float weights after QAT
    card = (searched_dir() / "MODEL_CARD.md").read_text()
    assert f"Trial {shipped['shipped_trial']} of `drivecompress search`" in card
    assert "drivecompress compress baseline --recipe searched/recipe.yaml" in card
    assert shipped["commands"] and all(c in card for c in shipped["commands"])

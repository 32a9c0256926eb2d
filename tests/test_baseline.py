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

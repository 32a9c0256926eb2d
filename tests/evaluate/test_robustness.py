import numpy as np
import pytest
import torch

from drivecompress.data.classes import SAFETY_CRITICAL
from drivecompress.evaluate.attacks import fgsm, pgd
from drivecompress.evaluate.predictor import TorchPredictor
from drivecompress.evaluate.robustness import (
    RobustnessConfig,
    reliability,
    robustness_report,
)
from drivecompress.models import build_model, default_spec
from drivecompress.train.loop import TrainConfig, fit


@pytest.fixture(scope="module")
def trained(splits):
    """A tiny model trained just enough to be right more often than chance (attacks need something to break)."""
    torch.manual_seed(0)
    model = build_model(default_spec("vgg", 0.25))
    fit(model, _five_classes(splits), splits.val.head(200), TrainConfig(epochs=4, batch_size=64, lr=0.05,
        amp="off", channels_last=False, augment=False), torch.device("cpu"))
    return model.eval()


def _five_classes(splits):
    """1,000 training images of five frequent classes: a tiny net learns them in seconds."""
    idx = np.flatnonzero(np.isin(splits.train.y, [1, 2, 12, 13, 38]))
    return splits.train.subset(idx).head(1000, seed=0)


@pytest.fixture(scope="module")
def batch(trained, splits):
    sub = _five_classes(splits).head(128, seed=1)  # training images: mostly classified right
    x = torch.as_tensor(sub.x).permute(0, 3, 1, 2).float() / 255
    return x, torch.as_tensor(sub.y)


def _acc(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_eps_zero_changes_nothing(trained, batch):
    x, y = batch
    assert torch.equal(pgd(trained, x, y, 0.0), x) and torch.equal(fgsm(trained, x, y, 0.0), x)


def test_attacks_stay_in_the_ball_and_hurt_more_with_eps(trained, batch):
    x, y = batch
    clean = _acc(trained, x, y)
    assert clean > 0.3
    accs = []
    for eps in (1 / 255, 4 / 255, 16 / 255):
        adv = pgd(trained, x, y, eps, steps=5)
        assert float((adv - x).abs().max()) <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        accs.append(_acc(trained, adv, y))
    assert accs[0] <= clean + 0.02 and accs[1] <= accs[0] + 0.02 and accs[2] <= accs[1] + 0.02
    assert accs[2] < clean - 0.2
    f = fgsm(trained, x, y, 8 / 255)
    assert float((f - x).abs().max()) <= 8 / 255 + 1e-6 and _acc(trained, f, y) < clean


def test_reliability_bins_on_hand_made_case():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.55, 0.45]])
    labels = np.array([0, 1, 0, 0])
    bins = reliability(probs, labels, n_bins=10)
    top = bins[9]
    assert top["count"] == 2 and top["accuracy"] == 0.5 and top["confidence"] == pytest.approx(0.95)
    assert bins[5]["count"] == 2 and bins[5]["accuracy"] == 1.0 and sum(b["count"] for b in bins) == 4


def test_report_structure_and_monotone_severity(trained, splits):
    cfg = RobustnessConfig(corruption_images=64, attack_images=32, corruptions=("gaussian_noise", "night"),
                           epsilons=(2, 8), pgd_steps=3, safety_critical=tuple(SAFETY_CRITICAL))
    rep = robustness_report(TorchPredictor(trained), _five_classes(splits), cfg, trained)
    assert set(rep["corruptions"]) == {"gaussian_noise", "night"} and len(rep["corruptions"]["night"]) == 5
    assert rep["corruptions"]["night"][-1] <= rep["clean_accuracy"]
    assert 0 <= rep["corruption_accuracy"] <= 1 and len(rep["safety_recall_under_corruption"]) == len(SAFETY_CRITICAL)
    assert rep["adversarial"]["method"] == "white-box" and set(rep["adversarial"]["pgd"]) == {"2/255", "8/255"}
    assert rep["adversarial_accuracy"] == rep["adversarial"]["pgd"]["8/255"]


def test_quick_robustness_cli_shows_progress_and_reports(tmp_path, capsys):
    import json

    from drivecompress.cli import main
    from drivecompress.train.checkpoint import save_checkpoint

    from ..conftest import tiny_model

    ck = save_checkpoint(tmp_path / "ck", tiny_model("vgg"))
    assert main(["robustness", str(ck), "--quick", "--json"]) == 0
    out = capsys.readouterr()
    rep = json.loads(out.out)
    assert set(rep["corruptions"]) == {"fog", "gaussian_noise", "motion_blur"} and rep["images"]["corruption"] == 100
    assert list(rep["adversarial"]["pgd"]) == ["8/255"]
    assert "robustness" in out.err  # the progress bar (stderr)
    assert main(["robustness", str(ck), "--quick", "--full"]) == 2

import numpy as np
import torch

from drivecompress.models import build_model, default_spec
from drivecompress.train.loop import TrainConfig, _lr_factor, epoch_order, evaluate_accuracy, fit

QUICK = TrainConfig(epochs=3, batch_size=64, lr=0.05, optimizer="sgd", amp="off", channels_last=False, seed=0)


def _tiny_resnet():
    torch.manual_seed(0)
    return build_model(default_spec("resnet", 0.25, depth=(1, 1, 1)))


def test_training_improves_accuracy_on_a_subset(splits):
    """A tiny end-to-end run: 1,500 training images, 3 epochs, must beat the untrained model clearly."""
    train = splits.train.head(1500, seed=0)
    val = splits.val.head(600, seed=0)
    model = _tiny_resnet()
    before = evaluate_accuracy(model, val, torch.device("cpu"))
    result = fit(model, train, val, QUICK, torch.device("cpu"))
    after = evaluate_accuracy(model, val, torch.device("cpu"))
    assert after == result.best_val_accuracy  # best weights are the ones left in the model
    assert after > before + 0.08 and after > 0.12
    assert len(result.history) == 3 and result.best_epoch in (1, 2, 3)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_training_is_reproducible(splits):
    train = splits.train.head(256, seed=0)
    val = splits.val.head(64, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=64, amp="off", channels_last=False, seed=7)
    a, b = _tiny_resnet(), _tiny_resnet()
    fit(a, train, val, cfg, torch.device("cpu"))
    fit(b, train, val, cfg, torch.device("cpu"))
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)


def test_custom_loss_is_used(splits):
    """Distillation/QAT plug in through loss_fn: a loss that ignores labels must still be what's optimized."""
    train = splits.train.head(128, seed=0)
    calls = []

    def loss_fn(logits, y, x):
        calls.append(x.shape)
        return logits.pow(2).mean()

    fit(_tiny_resnet(), train, splits.val.head(32), TrainConfig(epochs=1, batch_size=64, amp="off"),
        torch.device("cpu"), loss_fn=loss_fn)
    assert len(calls) == 2 and calls[0][1:] == (3, 32, 32)


def test_schedules():
    one = TrainConfig(schedule="onecycle", warmup_frac=0.2)
    assert _lr_factor(one, 0.0) < 0.1 and abs(_lr_factor(one, 0.2) - 1.0) < 1e-6 and _lr_factor(one, 1.0) < 1e-6
    cos = TrainConfig(schedule="cosine")
    assert _lr_factor(cos, 0.0) == 1.0 and np.isclose(_lr_factor(cos, 0.5), 0.5)


def test_class_balance_oversamples_rare_classes():
    y = np.array([0] * 900 + [1] * 100)
    plain = epoch_order(y, 0.0, np.random.default_rng(0))
    assert sorted(plain.tolist()) == list(range(1000))  # a permutation: every image once
    half = np.bincount(y[epoch_order(y, 0.5, np.random.default_rng(0))], minlength=2)
    full = np.bincount(y[epoch_order(y, 1.0, np.random.default_rng(0))], minlength=2)
    # expected share of class 1: 100*100^-.5 / (900*900^-.5 + 100*100^-.5) = 0.25; fully balanced 0.5
    assert 200 < half[1] < 300
    assert 440 < full[1] < 560

import itertools

import numpy as np
import torch

import drivecompress.train.loop as loop
from drivecompress.models import build_model, default_spec
from drivecompress.train.loop import (
    TrainConfig,
    _lr_factor,
    epoch_order,
    evaluate_accuracy,
    fit,
    learning_rate,
)

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


def test_swa_schedule_decays_to_swa_lr_then_holds_it():
    plain = TrainConfig(epochs=10, lr=0.1)
    swa = TrainConfig(epochs=10, lr=0.1, swa_epochs=4, swa_lr=0.02)
    assert learning_rate(plain, 0, 100) == 0.1 * _lr_factor(plain, 0.0)  # SWA off: schedule unchanged
    assert np.isclose(learning_rate(plain, 999, 100), 0.1 * _lr_factor(plain, 0.999))
    main = 600  # 6 of 10 epochs at 100 steps run the one-cycle schedule
    assert np.isclose(learning_rate(swa, int(main * swa.warmup_frac), 100), 0.1)
    lrs = [learning_rate(swa, s, 100) for s in range(int(main * swa.warmup_frac), 1000)]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(lrs))  # never rises after warm-up
    assert min(lrs) >= 0.02 - 1e-12 and np.isclose(learning_rate(swa, main - 1, 100), 0.02, atol=1e-6)
    assert all(learning_rate(swa, s, 100) == 0.02 for s in range(main, 1000))


def test_swa_ships_the_average_of_the_last_epochs(splits, monkeypatch):
    """With swa_epochs=2 of 3 the weights left in the model are the mean of the weights at the end of
    epochs 2 and 3 (snapshotted where the loop validates), and the reported accuracy is the average's."""
    train = splits.train.head(256, seed=0)
    val = splits.val.head(64, seed=0)
    snapshots = []
    original = loop.evaluate_accuracy

    def spy(model, *args, **kwargs):
        snapshots.append({k: v.detach().clone() for k, v in model.named_parameters()})
        return original(model, *args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_accuracy", spy)
    cfg = TrainConfig(epochs=3, batch_size=64, amp="off", channels_last=False, swa_epochs=2, swa_lr=0.02)
    model = _tiny_resnet()
    result = fit(model, train, val, cfg, torch.device("cpu"))
    assert len(snapshots) == 4  # three epochs plus the averaged model
    for name, p in model.named_parameters():
        assert torch.allclose(p, (snapshots[1][name] + snapshots[2][name]) / 2, atol=1e-6), name
        assert not torch.allclose(p, snapshots[2][name])
    assert result.best_epoch == 3 and result.history[-1]["swa_models"] == 2
    assert result.best_val_accuracy == original(model, val, torch.device("cpu"))


def test_a_strided_1x1_conv_with_few_input_channels_is_trained_in_nchw(splits):
    """oneDNN's channels-last 1x1 backward-weights kernel overruns its workspace for a strided 1x1 conv with
    under 16 input channels (oneDNN#6035; hung the suite after pruning left a 5-channel stride-2 shortcut):
    ``fit`` must keep such a model in NCHW, and still use channels-last for every other model."""
    train, val = splits.train.head(64, seed=0), splits.val.head(32)
    cfg = TrainConfig(epochs=1, batch_size=32, amp="off", channels_last=True)
    seen = []

    def loss_fn(logits, y, x):
        seen.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return torch.nn.functional.cross_entropy(logits, y)

    torch.manual_seed(0)
    narrow = build_model({"arch": "resnet", "stem": 8, "num_classes": 43, "stages": [
        {"stride": 2, "out": 16, "mids": [16], "projection": True}]})
    assert loop.onednn_1x1_hazard(narrow) == ["blocks.0.shortcut.0"]
    narrow.to(memory_format=torch.channels_last)  # as an earlier channels-last fit would have left it
    fit(narrow, train, val, cfg, torch.device("cpu"), loss_fn=loss_fn)
    assert seen == [False, False]
    assert all(p.is_contiguous() for p in narrow.parameters())
    wide = build_model({"arch": "resnet", "stem": 16, "num_classes": 43, "stages": [
        {"stride": 2, "out": 16, "mids": [16], "projection": True}]})
    assert loop.onednn_1x1_hazard(wide) == []
    seen.clear()
    fit(wide, train, val, cfg, torch.device("cpu"), loss_fn=loss_fn)
    assert seen == [True, True]


def test_progress_without_a_terminal_writes_a_start_line_epoch_lines_and_heartbeats(capsys, monkeypatch):
    """In a log (no terminal) a long epoch is not silent: a line at the start, a heartbeat with the step and
    running loss every HEARTBEAT_SECONDS inside an epoch, and one line per epoch."""
    from drivecompress.train.progress import TrainProgress

    monkeypatch.setattr(TrainProgress, "HEARTBEAT_SECONDS", 0.0)
    with TrainProgress("finalist 35", epochs=2, steps_per_epoch=2) as bar:
        for _ in range(2):
            bar.advance(loss=1.5, acc=0.25)
            bar.advance(loss=1.25, acc=0.5)
            bar.end_epoch(0.75)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("finalist 35:")]
    assert lines == ["finalist 35: 2 epochs x 2 steps",
                     "finalist 35: epoch 1/2 step 1/2 loss 1.500 acc 0.250",
                     "finalist 35: epoch 1/2 step 2/2 loss 1.250 acc 0.500",
                     "finalist 35: epoch 1/2 val_acc 0.7500",
                     "finalist 35: epoch 2/2 step 1/2 loss 1.500 acc 0.250",
                     "finalist 35: epoch 2/2 step 2/2 loss 1.250 acc 0.500",
                     "finalist 35: epoch 2/2 val_acc 0.7500"]


def test_the_bars_last_frame_shows_the_last_epochs_validation(capsys):
    """The bar's info was updated only on a step, so its final frame showed the epoch before's validation
    accuracy next to "epoch 6/6" (a proxy's log read 'val 0.6160' where epoch 6 had 0.6560)."""
    from drivecompress.train.progress import TrainProgress

    with TrainProgress("proxy", epochs=2, steps_per_epoch=1) as bar:
        bar.advance(loss=1.5, acc=0.25)
        bar.end_epoch(0.5)
        bar.advance(loss=1.25, acc=0.5)
        bar.end_epoch(0.75)
        info = bar.progress.tasks[0].fields["info"]
    assert info == "epoch 2/2 loss 1.250 acc 0.500 val 0.7500"

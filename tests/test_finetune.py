"""The shared fine-tune: with ``distill`` the input model's soft targets really drive the student."""

import pytest
import torch

from drivecompress.data.transforms import deploy_input
from drivecompress.train.finetune import FinetuneConfig, finetune

from .conftest import tiny_model


def _share_of_class(model, images, cls: int) -> float:
    with torch.no_grad():
        return float((model(images).argmax(1) == cls).float().mean())


def test_finetune_with_distill_follows_the_teacher(data):
    teacher = tiny_model("resnet", seed=1)
    with torch.no_grad():  # a teacher that calls every image class 5
        teacher.classifier.weight.zero_()
        teacher.classifier.bias.zero_()
        teacher.classifier.bias[5] = 10.0
    x = torch.as_tensor(deploy_input(data.val.head(128).x))
    shares = {}
    for distill in (False, True):
        student = tiny_model("resnet")
        cfg = FinetuneConfig(epochs=1, lr=0.05, train_subset=512, batch_size=64, distill=distill, alpha=1.0,
                             temperature=1.0)
        finetune(student, data, cfg, cfg.epochs, teacher=teacher, device="cpu")
        shares[distill] = _share_of_class(student, x, 5)
    assert shares[True] > 0.9 and shares[False] < 0.5, shares
    assert _share_of_class(teacher, x, 5) == 1.0  # the teacher itself is untouched


def test_weight_averaged_recovery_keeps_the_zeros_and_refuses_too_many_epochs(data):
    """``swa_epochs`` on a sparsifying step averages its recovery epochs; the masks hold through the average
    (an averaged zero is zero), and an average over as many epochs as the recovery has is refused."""
    import pytest
    from pydantic import ValidationError

    from drivecompress.prune.unstructured import UnstructuredConfig, conv_sparsity, sparsify

    model = tiny_model("resnet")
    cfg = UnstructuredConfig(sparsity=0.7, iterations=1, finetune_epochs=0, recovery_epochs=2, swa_epochs=1,
                             swa_lr=0.01, train_subset=256, batch_size=64, distill=False)
    notes = sparsify(model, data, cfg, device="cpu")
    assert conv_sparsity(model) >= 0.7 and notes["conv_sparsity"] >= 0.7
    with pytest.raises(ValidationError, match="swa_epochs"):
        UnstructuredConfig(recovery_epochs=2, swa_epochs=2)
    with pytest.raises(ValidationError, match="swa_epochs"):
        FinetuneConfig(epochs=1, swa_epochs=1)


def test_only_the_final_fine_tune_averages(data, monkeypatch):
    """Between-step fine-tunes train plainly; the recovery after the last step gets ``swa_epochs``."""
    import drivecompress.train.finetune as ft
    from drivecompress.prune.unstructured import UnstructuredConfig, sparsify

    seen = []
    real_fit = ft.fit
    monkeypatch.setattr(ft, "fit", lambda m, tr, va, tc, *a, **k: seen.append(tc.swa_epochs) or real_fit(
        m, tr, va, tc, *a, **k))
    cfg = UnstructuredConfig(sparsity=0.5, iterations=2, finetune_epochs=1, recovery_epochs=2, swa_epochs=1,
                             train_subset=128, batch_size=64, distill=False)
    sparsify(tiny_model("resnet"), data, cfg, device="cpu")
    assert seen == [0, 1]


def test_finetune_keeps_a_sparse_models_zeros_unless_told_not_to(mini_data):
    """Learning-rate rewinding is a ``finetune`` of a pruned model: its zeros must survive the training (and the
    weight averaging); ``keep_zeros: false`` lets them regrow; an all-zero layer is not frozen at zero."""
    import copy

    from drivecompress.prune.unstructured import UnstructuredConfig, apply_sparsity, make_permanent

    sparse = tiny_model("resnet")
    apply_sparsity(sparse, 0.7, UnstructuredConfig(sparsity=0.7))
    make_permanent(sparse)
    with torch.no_grad():
        sparse.classifier.weight.zero_()  # a zero-initialised head
    zeros = {n: m.weight == 0 for n, m in sparse.named_modules() if isinstance(m, torch.nn.Conv2d)}
    results = {}
    for keep in (True, False):
        model = copy.deepcopy(sparse)
        cfg = FinetuneConfig(epochs=2, lr=0.05, train_subset=256, batch_size=64, swa_epochs=1, keep_zeros=keep)
        finetune(model, mini_data, cfg, cfg.epochs, device="cpu", average=True)
        assert not any(hasattr(m, "weight_mask") for m in model.modules())  # masks folded in, plain weights
        assert bool((model.classifier.weight != 0).any()), keep  # the all-zero head trained
        results[keep] = all(bool((m.weight[zeros[n]] == 0).all()) for n, m in model.named_modules()
                            if n in zeros)
    assert results == {True: True, False: False}


def test_rewinding_as_a_finetune_equals_a_second_unstructured_step(mini_data):
    """experiments/deep-compression-rewind.yaml rewinds with ``finetune`` (zeros held); it was measured as a second
    ``unstructured`` step at the same sparsity, which re-derives the same mask: the two train identically."""
    import copy

    from drivecompress.prune.unstructured import UnstructuredConfig, sparsify

    common = dict(lr=0.05, train_subset=192, batch_size=64, swa_epochs=1, swa_lr=0.01, distill=True)
    pruned = tiny_model("resnet")
    ucfg = UnstructuredConfig(sparsity=0.8, include_linear=True, max_layer_sparsity=0.96, iterations=1,
                              finetune_epochs=0, recovery_epochs=1, lr=0.01, train_subset=192, batch_size=64,
                              distill=False)
    sparsify(pruned, mini_data, ucfg, device="cpu")
    a, b = copy.deepcopy(pruned), copy.deepcopy(pruned)
    rewind = ucfg.model_copy(update={"recovery_epochs": 2, **common})
    sparsify(a, mini_data, rewind, teacher=pruned, device="cpu", seed=3)
    finetune(b, mini_data, FinetuneConfig(epochs=2, **common), 2, teacher=pruned, device="cpu", seed=3,
             average=True)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_mixup_images_are_labelled_by_the_teacher_alone(data):
    """With ``mixup: 1`` every training image is a mixture with no label, so what the model learns comes from
    the teacher only: it follows a teacher that calls everything class 5, and the epoch's training accuracy
    counts labelled images only (none here). Without a teacher, mixup is refused."""
    import pytest
    from pydantic import ValidationError

    teacher = tiny_model("resnet", seed=1)
    with torch.no_grad():
        teacher.classifier.weight.zero_()
        teacher.classifier.bias.zero_()
        teacher.classifier.bias[5] = 10.0
    student = tiny_model("resnet")
    cfg = FinetuneConfig(epochs=1, lr=0.05, train_subset=512, batch_size=64, distill=True, alpha=0.5,
                         temperature=1.0, mixup=1.0)
    result = finetune(student, data, cfg, cfg.epochs, teacher=teacher, device="cpu")
    x = torch.as_tensor(deploy_input(data.val.head(128).x))
    assert _share_of_class(student, x, 5) > 0.9
    assert result.history[0]["train_acc"] == 0.0
    with pytest.raises(ValidationError, match="mixup needs distill"):
        FinetuneConfig(distill=False, mixup=0.5)


def test_finetune_refuses_a_negative_or_boolean_epoch_count(mini_data):
    """dc.finetune(..., epochs=-1) returned None as if it had trained (issue #53)."""
    from drivecompress.errors import BadInputError

    for bad in (-1, True, 1.5):
        with pytest.raises(BadInputError, match="epochs must be a whole number >= 0"):
            finetune(tiny_model("vgg"), mini_data, FinetuneConfig(), bad)

import math

import pytest
import torch
import torch.nn.functional as F

from drivecompress.distill.losses import (
    FeatureAdapter,
    attention_transfer,
    feature_loss,
    hard_target_loss,
    kd_kl,
    missed_weights,
    soft_target_loss,
)
from drivecompress.distill.step import DistillConfig, Distiller
from drivecompress.models import build_model, default_spec
from drivecompress.train.loop import TrainConfig, fit
from tests.nets import BranchNet


def test_identical_logits_give_zero_kl():
    z = torch.randn(5, 43)
    assert float(kd_kl(z, z.clone(), temperature=3.0)) == pytest.approx(0.0, abs=1e-6)


def test_kl_hand_computed_and_t_squared_scaling():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])  # teacher probs (0.75, 0.25) at T=1
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert float(kd_kl(s, t, temperature=1.0)) == pytest.approx(expected, rel=1e-5)
    # at T=2 the softened teacher is (sqrt3/(1+sqrt3), 1/(1+sqrt3)); the loss is that KL times 4
    p = math.sqrt(3) / (1 + math.sqrt(3))
    kl2 = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert float(kd_kl(s, t, temperature=2.0)) == pytest.approx(4 * kl2, rel=1e-5)


def test_alpha_zero_is_plain_cross_entropy_and_alpha_one_is_kd():
    s, t, y = torch.randn(6, 43), torch.randn(6, 43), torch.randint(0, 43, (6,))
    assert torch.allclose(soft_target_loss(s, t, y, alpha=0.0), F.cross_entropy(s, y))
    assert torch.allclose(soft_target_loss(s, t, y, temperature=2.0, alpha=1.0), kd_kl(s, t, 2.0))


def test_missed_images_weigh_more():
    # image 0: teacher right, student wrong (newly missed); 1: both right; 2: teacher wrong, student wrong
    y = torch.tensor([0, 1, 2])
    t = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [5.0, 0.0, 0.0]])
    s = torch.tensor([[0.0, 3.0, 0.0], [0.0, 3.0, 0.0], [0.0, 3.0, 0.0]])
    assert missed_weights(s, t, y, 1.0) is None
    w = missed_weights(s, t, y, 4.0)
    assert w.tolist() == [4.0, 1.0, 1.0]
    ce = F.cross_entropy(s, y, reduction="none")
    assert torch.allclose(soft_target_loss(s, t, y, alpha=0.0, weights=w), (ce * w).mean())
    kl = F.kl_div(F.log_softmax(s / 2, 1), F.log_softmax(t / 2, 1), reduction="none", log_target=True).sum(1)
    assert torch.allclose(kd_kl(s, t, 2.0, w), (kl * w).mean() * 4)
    # weights of one are the unweighted loss
    ones = torch.ones(3)
    assert torch.allclose(soft_target_loss(s, t, y, weights=ones), soft_target_loss(s, t, y))


def test_hard_target_uses_teacher_argmax():
    t = torch.tensor([[0.0, 5.0, 1.0]])
    s = torch.tensor([[0.0, 2.0, 0.0]])
    assert torch.allclose(hard_target_loss(s, t), F.cross_entropy(s, torch.tensor([1])))


def test_adapter_maps_mismatched_channels_and_feature_losses():
    adapter = FeatureAdapter(8, 24)
    s, t = torch.randn(2, 8, 16, 16), torch.randn(2, 24, 8, 8)
    assert adapter(s).shape == (2, 24, 16, 16)
    loss = feature_loss(s, t, adapter)
    loss.backward()
    assert loss.item() > 0 and adapter.proj.weight.grad is not None
    assert float(attention_transfer(t, t)) == pytest.approx(0.0, abs=1e-7)
    assert float(attention_transfer(s, t)) > 0


def test_adapter_between_equal_widths_starts_as_the_identity():
    """A pruned model matched to its dense self: zero feature loss on identical features from the first step."""
    adapter = FeatureAdapter(16, 16)
    f = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.equal(adapter(f), f)
        assert float(feature_loss(f, f.clone(), adapter)) == 0.0


def test_distillation_moves_student_toward_teacher(splits):
    """A few hundred steps of pure KD (alpha=1, labels unused) make the student agree with the teacher more."""
    torch.manual_seed(0)
    teacher = build_model(default_spec("resnet", 0.25, depth=(1, 1, 1))).eval()
    fit(teacher, splits.train.head(1500, seed=0), splits.val.head(100),
        TrainConfig(epochs=2, batch_size=64, lr=0.05, amp="off", channels_last=False), torch.device("cpu"))
    student = build_model(default_spec("vgg", 0.25))
    probe = splits.val.head(300, seed=2)
    x = torch.as_tensor(probe.x).permute(0, 3, 1, 2).float() / 255

    def agreement() -> float:
        with torch.no_grad():
            return float((student.eval()(x).argmax(1) == teacher(x).argmax(1)).float().mean())

    before = agreement()
    d = Distiller(student, teacher, DistillConfig(alpha=1.0, feature_pairs=[("features.4", "blocks.1")]),
                  torch.device("cpu"), x[:1])
    assert len(list(student.kd_adapters.parameters())) == 1
    fit(student, splits.train.head(1500, seed=1), splits.val.head(100),
        TrainConfig(epochs=2, batch_size=64, lr=0.05, amp="off", channels_last=False, label_smoothing=0.0),
        torch.device("cpu"), loss_fn=d.loss_fn())
    d.close()
    assert not hasattr(student, "kd_adapters")
    assert agreement() > before + 0.1


def test_student_from_a_full_spec_takes_classes_and_normalization_from_data_and_teacher(mini_data):
    """A searched or hand-designed network as the student: its spec is used as given, except what must match
    the data (classes) and the teacher (input normalization); a spec that cannot build is refused up front."""
    from pydantic import ValidationError

    from drivecompress.distill.student import StudentConfig, student_spec

    stages = [{"stride": 2, "out": 16, "mids": [16], "projection": True}]
    cfg = StudentConfig(spec={"arch": "resnet", "stem": 16, "stages": stages, "num_classes": 7})
    teacher = build_model(default_spec("resnet", 0.25))
    spec = student_spec(cfg, teacher, mini_data)
    assert spec["num_classes"] == mini_data.num_classes and spec["stages"] == stages
    assert spec["input_norm"] == teacher.spec()["input_norm"]
    model = build_model(spec)
    assert model(torch.zeros(2, *mini_data.input_shape)).shape == (2, mini_data.num_classes)
    with pytest.raises(ValidationError, match="spec does not build a model"):
        StudentConfig(spec={"arch": "resnet", "stem": 16})
    with pytest.raises(ValidationError, match="swa_epochs"):
        StudentConfig(epochs=5, swa_epochs=5)


def test_teacher_gets_its_requires_grad_flags_back_after_distillation(splits):
    """The teacher is frozen while it teaches, then returned as it was: a user's model passed as a teacher
    (e.g. to prune(..., teacher=model)) can still be trained afterwards (bench_peers hit this)."""
    teacher = build_model(default_spec("resnet", 0.25))
    student = build_model(default_spec("resnet", 0.25))
    teacher.classifier.weight.requires_grad_(False)  # a flag of the user's own, kept as it was
    d = Distiller(student, teacher, DistillConfig(), torch.device("cpu"))
    assert not any(p.requires_grad for p in teacher.parameters())
    d.close()
    assert not teacher.classifier.weight.requires_grad
    assert all(p.requires_grad for n, p in teacher.named_parameters() if n != "classifier.weight")


def test_distiller_weighs_what_the_student_newly_misses():
    """``missed_weight`` reaches the loss fit uses: the images an untrained student gets wrong (and the teacher
    right, its own argmax being the label) count 3 times, and the loss grows."""
    torch.manual_seed(0)
    teacher, student = build_model(default_spec("resnet", 0.25)), BranchNet()  # a user's network as the student
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        y = teacher.eval()(x).argmax(1)
        student.eval()
        wrong = student(x).argmax(1) != y
    logits = student(x)
    losses = []
    for weight in (1.0, 3.0):
        d = Distiller(student, teacher, DistillConfig(missed_weight=weight), torch.device("cpu"))
        losses.append(d.loss_fn()(logits, y, x))
        d.close()
    w = 1.0 + 2.0 * wrong.float()
    expected = soft_target_loss(logits, teacher(x), y, weights=w)
    assert wrong.any()
    assert torch.allclose(losses[1], expected, atol=1e-5)
    assert float(losses[1].detach()) > float(losses[0].detach())


def test_mixed_images_do_not_shrink_the_label_term():
    """Mixed images (label UNLABELLED) contribute no cross-entropy; the term is averaged over the labelled images,
    so it equals the plain cross-entropy of those, whatever fraction of the batch was mixed."""
    from drivecompress.data.transforms import UNLABELLED

    torch.manual_seed(0)
    s, t = torch.randn(8, 5), torch.randn(8, 5)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    mixed = y.clone()
    mixed[4:] = UNLABELLED
    assert torch.allclose(soft_target_loss(s, t, mixed, alpha=0.0), F.cross_entropy(s[:4], y[:4]))
    w = torch.tensor([1.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    expected = (F.cross_entropy(s[:4], y[:4], reduction="none") * w[:4]).mean()
    assert torch.allclose(soft_target_loss(s, t, mixed, alpha=0.0, weights=w), expected)
    assert torch.allclose(soft_target_loss(s, t, y, alpha=0.0), F.cross_entropy(s, y))  # nothing mixed: unchanged

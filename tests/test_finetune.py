"""The shared fine-tune: with ``distill`` the input model's soft targets really drive the student."""

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

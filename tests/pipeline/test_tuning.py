"""The shared fine-tune: with ``distill`` the input model's soft targets really drive the student."""

import torch

from drivecompress.data.transforms import deploy_input
from drivecompress.pipeline.registry import Context, State
from drivecompress.pipeline.steps import FinetuneStep
from drivecompress.pipeline.tuning import tune

from ..conftest import tiny_model


def _share_of_class(model, images, cls: int) -> float:
    with torch.no_grad():
        return float((model(images).argmax(1) == cls).float().mean())


def test_finetune_with_distill_follows_the_teacher(tmp_path, splits):
    teacher = tiny_model("resnet", seed=1)
    with torch.no_grad():  # a teacher that calls every image class 5
        teacher.classifier.weight.zero_()
        teacher.classifier.bias.zero_()
        teacher.classifier.bias[5] = 10.0
    ctx = Context(splits, teacher, tmp_path, torch.device("cpu"), seed=0)
    x = torch.as_tensor(deploy_input(splits.val.head(128).x))
    shares = {}
    for distill in (False, True):
        state = State(module=tiny_model("resnet"))
        cfg = FinetuneStep(epochs=1, lr=0.05, train_subset=512, batch_size=64, distill=distill, alpha=1.0,
                           temperature=1.0)
        tune(state, cfg, ctx, cfg.epochs, "t")
        shares[distill] = _share_of_class(state.module, x, 5)
    assert shares[True] > 0.9 and shares[False] < 0.5, shares
    assert _share_of_class(teacher, x, 5) == 1.0  # the teacher itself is untouched

"""How to score channels: L1/L2 magnitude, first-order Taylor (gradient x weight), batch-norm scale.

Kept apart from "which units" (Torch-Pruning's dependency groups) and "how to cut" (the pruner).
"""

from __future__ import annotations

from typing import Literal

import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from drivecompress.data.dataset import LabeledImages

ImportanceName = Literal["l1", "l2", "taylor", "bn_scale"]


def make_importance(name: ImportanceName) -> tp.importance.Importance:
    """The Torch-Pruning importance object for a criterion name."""
    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    if name == "bn_scale":
        return tp.importance.BNScaleImportance()
    raise ValueError(f"unknown importance '{name}' (choose l1, l2, taylor, bn_scale)")


def accumulate_gradients(model: nn.Module, data: LabeledImages, batches: int = 4, batch_size: int = 64) -> None:
    """Taylor importance needs gradients: sum the loss gradients of a few clean batches into ``.grad``."""
    model.eval()
    model.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(data.batches(batch_size)):
        if i >= batches:
            break
        F.cross_entropy(model(x), y).backward()



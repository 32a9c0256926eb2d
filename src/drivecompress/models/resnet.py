"""CIFAR-style ResNet for 32x32 inputs: basic blocks with residual additions, projection shortcuts where
the width or stride changes. The first stage keeps full 32x32 resolution, because small signs (<14 px)
only survive if early layers do not downsample."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from drivecompress.models.layers import conv_bn, conv_in, conv_out, input_norm
from drivecompress.models.registry import register_model, round_width


class BasicBlock(nn.Module):
    """conv-bn-relu, conv-bn, + shortcut, relu. ``mid`` is prunable freely; ``out`` is coupled by the add."""

    def __init__(self, cin: int, mid: int, out: int, stride: int, projection: bool | None = None) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = conv_bn(cin, mid, stride=stride)
        self.conv2 = conv_bn(mid, out, act=False)
        # Explicit flag: after channel pruning ``cin == out`` can happen by chance where a projection exists.
        projection = (stride != 1 or cin != out) if projection is None else projection
        self.shortcut = conv_bn(cin, out, k=1, stride=stride, act=False) if projection else None
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.conv2(self.conv1(x)) + idt)


@register_model("resnet")
class ResNet(nn.Module):
    """Spec: ``{"arch": "resnet", "stem": w, "stages": [{"stride": s, "out": w, "mids": [w, ...]}, ...]}``."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.norm = input_norm(spec)
        self.stem = conv_bn(int(spec.get("in_channels", 3)), int(spec["stem"]))
        blocks: list[nn.Module] = []
        cin = int(spec["stem"])
        for stage in spec["stages"]:
            for i, mid in enumerate(stage["mids"]):
                stride = int(stage["stride"]) if i == 0 else 1
                proj = stage.get("projection") if i == 0 else False
                blocks.append(BasicBlock(cin, int(mid), int(stage["out"]), stride, proj))
                cin = int(stage["out"])
        self.stage_sizes = [len(s["mids"]) for s in spec["stages"]]
        self.stage_strides = [int(s["stride"]) for s in spec["stages"]]
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, int(spec["num_classes"]))

    @staticmethod
    def default_spec(
        width_mult: float = 1.0, num_classes: int = 43, depth: tuple[int, ...] = (2, 2, 2)
    ) -> dict[str, Any]:
        widths = [round_width(w * width_mult) for w in (32, 64, 128)]
        stages = [
            {"stride": 1 if i == 0 else 2, "out": w, "mids": [w] * n, "projection": i > 0}
            for i, (w, n) in enumerate(zip(widths, depth, strict=True))
        ]
        return {"arch": "resnet", "stem": widths[0], "stages": stages, "num_classes": num_classes}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(self.norm(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))

    def spec(self) -> dict[str, Any]:
        stages, it = [], iter(self.blocks)
        for n, stride in zip(self.stage_sizes, self.stage_strides, strict=True):
            blks = [next(it) for _ in range(n)]
            mids = [conv_out(b.conv1) for b in blks]
            stages.append({"stride": stride, "out": conv_out(blks[-1].conv2), "mids": mids,
                           "projection": blks[0].shortcut is not None})
        return {
            "arch": "resnet",
            "stem": conv_out(self.stem),
            "stages": stages,
            "num_classes": self.classifier.out_features,
            "input_norm": self.norm.spec(),
            **({"in_channels": conv_in(self.stem)} if conv_in(self.stem) != 3 else {}),
        }

"""MobileNetV2-style net: inverted residuals (1x1 expand, kxk depthwise (3 by default), 1x1 project), residual adds when
shape allows. Strides adapted to 32x32 inputs (downsample only twice before the head)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from drivecompress.models.layers import conv_bn, conv_in, conv_out, input_norm
from drivecompress.models.registry import register_model, round_width

# (expansion, out, repeats, first stride), CIFAR-style MobileNetV2 trimmed for 32x32 / 43 classes.
_BASE = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 3, 2), (6, 96, 2, 1)]


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise kxk -> project (1x1, linear); add the input when stride 1 and widths match."""

    def __init__(self, cin: int, hidden: int, out: int, stride: int, expand: bool | None = None,
                 kernel: int = 3) -> None:
        super().__init__()
        self.stride = stride
        # Explicit flag: after channel pruning ``hidden == cin`` can happen by chance in an expanding block.
        expand = hidden != cin if expand is None else expand
        self.expand = conv_bn(cin, hidden, k=1) if expand else None
        self.dw = conv_bn(hidden, hidden, k=kernel, stride=stride, groups=hidden)
        self.project = conv_bn(hidden, out, k=1, act=False)
        self.use_res = stride == 1 and cin == out  # decided at build time; pruning keeps the add's widths coupled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.dw(y))
        return x + y if self.use_res else y


@register_model("mobilenetv2")
class MobileNetV2(nn.Module):
    """Spec: ``{"arch": "mobilenetv2", "stem": w, "blocks": [{"hidden": h, "out": w, "stride": s}], "head": w}``;
    a block may set ``kernel`` (odd depthwise size, default 3: the architecture search tries 5)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.norm = input_norm(spec)
        self.stem = conv_bn(int(spec.get("in_channels", 3)), int(spec["stem"]))
        cin, blocks = int(spec["stem"]), []
        for b in spec["blocks"]:
            kernel = int(b.get("kernel", 3))
            if kernel < 1 or kernel % 2 == 0:
                raise ValueError(f"block kernel must be odd and positive, got {kernel}")
            blocks.append(InvertedResidual(cin, int(b["hidden"]), int(b["out"]), int(b["stride"]), b.get("expand"),
                                           kernel))
            cin = int(b["out"])
        self.blocks = nn.Sequential(*blocks)
        self.head = conv_bn(cin, int(spec["head"]), k=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(int(spec["head"]), int(spec["num_classes"]))

    @staticmethod
    def default_spec(width_mult: float = 1.0, num_classes: int = 43) -> dict[str, Any]:
        stem = round_width(32 * width_mult)
        cin, blocks = stem, []
        for t, c, n, s in _BASE:
            out = round_width(c * width_mult)
            for i in range(n):
                blocks.append({"hidden": cin * t, "out": out, "stride": s if i == 0 else 1, "expand": t != 1,
                               "kernel": 3})
                cin = out
        head = round_width(max(256, 256 * width_mult))
        return {"arch": "mobilenetv2", "stem": stem, "blocks": blocks, "head": head, "num_classes": num_classes}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(self.norm(x))))
        return self.classifier(torch.flatten(self.pool(x), 1))

    def spec(self) -> dict[str, Any]:
        blocks = [
            {"hidden": conv_out(b.dw), "out": conv_out(b.project), "stride": b.stride, "expand": b.expand is not None,
             "kernel": b.dw[0].kernel_size[0]}
            for b in self.blocks
        ]
        return {
            "arch": "mobilenetv2",
            "stem": conv_out(self.stem),
            "blocks": blocks,
            "head": conv_out(self.head),
            "num_classes": self.classifier.out_features,
            "input_norm": self.norm.spec(),
            **({"in_channels": conv_in(self.stem)} if conv_in(self.stem) != 3 else {}),
        }

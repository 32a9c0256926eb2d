"""Plain VGG-style CNN: stacked 3x3 conv-BN-ReLU with max-pooling, global pooling, linear classifier."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from drivecompress.models.layers import conv_bn, conv_in, conv_out, input_norm
from drivecompress.models.registry import register_model, round_width

_BASE: list[Any] = [32, 32, "M", 64, 64, "M", 128, 128, "M"]


@register_model("vgg")
class VGG(nn.Module):
    """Spec: ``{"arch": "vgg", "features": [w, w, "M", ...], "num_classes": 43, "input_norm": {...}}``."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.norm = input_norm(spec)
        self.layout = ["M" if v == "M" else "C" for v in spec["features"]]
        layers: list[nn.Module] = []
        cin = int(spec.get("in_channels", 3))
        for v in spec["features"]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(conv_bn(cin, int(v)))
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, int(spec["num_classes"]))

    @staticmethod
    def default_spec(width_mult: float = 1.0, num_classes: int = 43) -> dict[str, Any]:
        feats = [v if v == "M" else round_width(v * width_mult) for v in _BASE]
        return {"arch": "vgg", "features": feats, "num_classes": num_classes}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.norm(x))
        return self.classifier(torch.flatten(self.pool(x), 1))

    def spec(self) -> dict[str, Any]:
        feats: list[Any] = ["M" if isinstance(m, nn.MaxPool2d) else conv_out(m) for m in self.features]
        return {
            "arch": "vgg",
            "features": feats,
            "num_classes": self.classifier.out_features,
            "input_norm": self.norm.spec(),
            **({"in_channels": conv_in(self.features[0])} if conv_in(self.features[0]) != 3 else {}),
        }

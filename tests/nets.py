"""Three networks the zoo does not have, written the way a perception team might: every technique must
handle them (or refuse with a reason). Together they cover concatenated branches, squeeze-and-excitation
gating, depthwise + pointwise convs inside one nn.Sequential, residual adds, grouped convs and a functional
forward (F.relu, torch.cat, F.adaptive_avg_pool2d)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Per-image standardisation (many GTSRB images are nearly black)."""
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) / (x.std(dim=(1, 2, 3), keepdim=True) + 0.05)


class BranchNet(nn.Module):
    """Two conv branches concatenated, a residual add, all activations functional."""

    def __init__(self, num_classes: int = 43, in_ch: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_ch, 32, 3, stride=2, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(32)
        self.left = nn.Conv2d(32, 32, 3, padding=1)
        self.right = nn.Conv2d(32, 32, 1)
        self.mix = nn.Conv2d(64, 64, 3, stride=2, padding=1)
        self.mix_bn = nn.BatchNorm2d(64)
        self.res = nn.Conv2d(64, 64, 3, padding=1)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn0(self.stem(_norm(x))))
        x = torch.cat([F.relu(self.left(x)), F.relu(self.right(x))], dim=1)
        x = F.relu(self.mix_bn(self.mix(x)))
        x = F.relu(x + self.res(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SqueezeExcite(nn.Module):
    """Features multiplied by a sigmoid of their pooled summary."""

    def __init__(self, ch: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(ch, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class SEGroupNet(nn.Module):
    """Grouped convs, an SE gate and a residual add, as modules."""

    def __init__(self, num_classes: int = 43, in_ch: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32),
                                  nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=4, bias=False),
                                     nn.BatchNorm2d(32),
                                     nn.ReLU())
        self.se = SqueezeExcite(32, 8)
        self.down = nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(_norm(x))
        x = x + self.se(self.grouped(x))
        return self.fc(torch.flatten(self.pool(self.down(x)), 1))


class DepthwiseSeqNet(nn.Module):
    """Depthwise conv, BN, ReLU, pointwise conv, BN, ReLU inside ONE nn.Sequential (the case the old QAT
    collapsed into a single conv), max-pooling, and a linear classifier named unlike the zoo's."""

    def __init__(self, num_classes: int = 43, in_ch: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        )
        self.logits_layer = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(_norm(x))
        return self.logits_layer(x.mean(dim=(2, 3)))


NETS = {"branch": BranchNet, "se_group": SEGroupNet, "dw_seq": DepthwiseSeqNet}


def make_net(name: str, seed: int = 0, num_classes: int = 43, in_ch: int = 3) -> nn.Module:
    """A deterministic instance with non-trivial BatchNorm statistics (as a trained network would have)."""
    torch.manual_seed(seed)
    net = NETS[name](num_classes, in_ch)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return net.eval()

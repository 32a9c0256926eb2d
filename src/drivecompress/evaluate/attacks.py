"""L-infinity adversarial attacks (FGSM, PGD) on PyTorch models, in the deploy input space [0, 1]."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _grad_sign(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    return grad.sign()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """One step of size eps along the sign of the loss gradient (Goodfellow et al., 2015)."""
    model.eval()
    if eps == 0:
        return x.clone()
    return (x + eps * _grad_sign(model, x, y)).clamp(0, 1).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 7,
        alpha: float | None = None, seed: int = 0) -> torch.Tensor:
    """Projected gradient descent with a seeded random start (Madry et al., 2018)."""
    model.eval()
    if eps == 0:
        return x.clone()
    alpha = alpha if alpha is not None else 2.5 * eps / steps
    gen = torch.Generator(device=x.device).manual_seed(seed)
    adv = (x + (torch.rand(x.shape, generator=gen, device=x.device) * 2 - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        adv = adv + alpha * _grad_sign(model, adv, y)
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1).detach()
    return adv

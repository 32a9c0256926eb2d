"""Batched, sign-appropriate augmentation on tensors (runs on the training device, no per-image Python).

Why these choices (DESIGN.md "domain facts"): every sign sits at the top-left corner of a black canvas and
was only ever shrunk, so scale/rotation are applied about the sign itself and keep it anchored at the
corner; shrinking is anti-aliased (blur before resampling) to look like the data's own downscaling;
photometric changes are multiplicative so the black canvas stays black; and there is no horizontal flip,
which would turn "keep left" into "keep right".
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random augmentation; the defaults are the ones the shipped baseline was trained with
    (a pydantic dataclass: bounds checked on construction)."""

    scale_min: float = Field(0.55, gt=0, le=1.1)
    scale_max: float = Field(1.1, gt=0, le=4)
    rotate_deg: float = Field(12.0, ge=0, le=180)
    shift_px: float = Field(1.5, ge=0)
    brightness: tuple[float, float] = (0.6, 1.5)
    gamma: tuple[float, float] = (0.7, 1.4)
    channel_gain: float = Field(0.08, ge=0, lt=1, description="a channel's gain is 1 +- this (colour cast)")
    blur_prob: float = Field(0.3, ge=0, le=1)
    blur_sigma_max: float = Field(0.8, ge=0)

    @model_validator(mode="after")
    def _check_ranges(self) -> AugmentConfig:
        """A range is (low, high) with 0 < low <= high: a zero or negative brightness or gamma blanks or
        inverts an image instead of varying it."""
        if self.scale_min > self.scale_max:
            raise ValueError(f"scale_min ({self.scale_min}) must not exceed scale_max ({self.scale_max})")
        for name in ("brightness", "gamma"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be a range (low, high) with 0 < low <= high (got ({lo}, {hi}))")
        return self


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image (sigma == 0 leaves an image unchanged)."""
    n, c, h, w = x.shape
    offs = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.clamp_min(1e-3).view(n, 1)
    k = torch.exp(-0.5 * (offs.view(1, -1) / s) ** 2)
    k = k / k.sum(dim=1, keepdim=True)  # (n, 2r+1); sigma≈0 gives a delta
    k = k.repeat_interleave(c, dim=0)  # (n*c, 2r+1)
    flat = x.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0)), k.view(n * c, 1, 1, -1), groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius)), k.view(n * c, 1, -1, 1), groups=n * c)
    return flat.view(n, c, h, w)


def _affine_theta(size: torch.Tensor, cfg: AugmentConfig, hw: int, gen: torch.Generator | None):
    """Per-image affine (normalized coords, align_corners=False) that scales/rotates about the sign's centre
    and puts the result back near the top-left corner. Returns (theta, scale)."""
    n = size.shape[0]
    dev = size.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, device=dev, generator=gen)

    k = size.clamp_min(4).float()
    s_max = torch.clamp(hw / k, max=cfg.scale_max)
    s = cfg.scale_min + (s_max - cfg.scale_min).clamp_min(0) * torch.rand(n, device=dev, generator=gen)
    ang = u(-cfg.rotate_deg, cfg.rotate_deg) * math.pi / 180.0
    tx, ty = u(-cfg.shift_px / 2, cfg.shift_px), u(-cfg.shift_px / 2, cfg.shift_px)
    cos, sin = torch.cos(ang), torch.sin(ang)
    # Inverse map from output pixel q to input pixel p:  p = A q + b,  A = R(-ang)/s,  b = c - A (t + c s).
    a = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2) / s.view(n, 1, 1)
    c = torch.stack([k / 2, k / 2], -1)
    t = torch.stack([tx, ty], -1) + c * s.view(n, 1)
    b = c - (a @ t.unsqueeze(-1)).squeeze(-1)
    half = hw / 2.0
    # Normalized: u_in = A u_out + (A 1 + b/half - 1)
    trans = (a @ torch.ones(n, 2, 1, device=dev)).squeeze(-1) + b / half - 1.0
    theta = torch.cat([a, trans.unsqueeze(-1)], dim=-1)
    return theta, s


def augment_batch(
    x: torch.Tensor, sizes: torch.Tensor, cfg: AugmentConfig | None = None, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Augment a float batch in [0, 1], NCHW, given each sign's size in pixels (see ``sign_sizes``)."""
    cfg = cfg or AugmentConfig()
    n, _, hw, _ = x.shape
    dev = x.device
    theta, s = _affine_theta(sizes.to(dev), cfg, hw, gen)
    # Anti-alias before shrinking (sigma ~ 0.5*sqrt(1/s^2-1)), plus an occasional mild extra blur.
    aa = 0.5 * torch.sqrt((1.0 / s.clamp(max=1.0) ** 2 - 1.0).clamp_min(0))
    extra = (torch.rand(n, device=dev, generator=gen) < cfg.blur_prob).float()
    extra = extra * cfg.blur_sigma_max * torch.rand(n, device=dev, generator=gen)
    sigma = torch.sqrt(aa**2 + extra**2)
    x = _gaussian_blur(x, sigma)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    lo, hi = cfg.brightness
    bright = lo + (hi - lo) * torch.rand(n, 1, 1, 1, device=dev, generator=gen)
    gain = 1.0 + cfg.channel_gain * (2 * torch.rand(n, x.shape[1], 1, 1, device=dev, generator=gen) - 1)
    glo, ghi = cfg.gamma
    gamma = glo + (ghi - glo) * torch.rand(n, 1, 1, 1, device=dev, generator=gen)
    x = (x.clamp(0, 1) ** gamma) * bright * gain
    return x.clamp(0.0, 1.0)


UNLABELLED = -100
"""The label of a mixed image: ``F.cross_entropy`` ignores it (its default ``ignore_index``)."""


def mix_batch(x: torch.Tensor, y: torch.Tensor, fraction: float, gen: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace about ``fraction`` of a batch by mixtures ``lam * x_i + (1 - lam) * x_j`` of two of its images
    (``lam`` uniform, ``j`` a random partner) labelled ``UNLABELLED``: inputs between the classes, where a
    teacher's answer says most about its decision boundaries (function matching: Beyer et al., 2022; mixup
    raised the student-teacher agreement in Stanton et al., 2021). Only a distillation term learns from them."""
    n, dev = len(x), x.device
    pick = torch.rand(n, device=dev, generator=gen) < fraction
    partner = torch.randperm(n, device=dev, generator=gen)
    lam = torch.rand(n, 1, 1, 1, device=dev, generator=gen, dtype=x.dtype)
    mixed = lam * x + (1 - lam) * x[partner]
    return torch.where(pick[:, None, None, None], mixed, x), torch.where(pick, torch.full_like(y, UNLABELLED), y)


def to_tensor_batch(images_uint8, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 NHWC (numpy or tensor) -> float32 NCHW in [0, 1], the deploy input convention."""
    t = torch.as_tensor(images_uint8, device=device)
    return t.permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def deploy_input(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 NHWC numpy -> float32 NCHW in [0, 1] numpy: what the deploy ONNX model takes."""
    return images_uint8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0

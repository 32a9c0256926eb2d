"""Weather and sensor corruptions at severities 1-5 (ImageNet-C methodology, CIFAR-C-sized parameters,
adapted to 32x32 road signs). Vectorised over a float NCHW batch in [0, 1]; deterministic given a seed.

The corruption happens in the camera, before the sign was cropped and pasted on its black canvas, so each
corruption is applied to the image and the canvas outside the sign is restored to black afterwards.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
CORRUPTIONS: dict[str, Corruption] = {}


def corruption(name: str):
    def deco(fn: Corruption) -> Corruption:
        CORRUPTIONS[name] = fn
        return fn

    return deco


def _conv(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Depthwise 2-D convolution of every channel with one kernel (reflect padding)."""
    k = torch.as_tensor(kernel, dtype=torch.float32)
    k = (k / k.sum()).expand(3, 1, *k.shape).contiguous()
    ph, pw = kernel.shape[0] // 2, kernel.shape[1] // 2
    t = F.pad(torch.as_tensor(x), (pw, pw, ph, ph), mode="reflect")
    return F.conv2d(t, k, groups=3).numpy()


@corruption("gaussian_noise")
def gaussian_noise(x, s, rng):
    return x + rng.normal(0, [0.04, 0.06, 0.08, 0.09, 0.10][s - 1], x.shape).astype(np.float32)


@corruption("shot_noise")
def shot_noise(x, s, rng):
    c = [500, 250, 100, 75, 50][s - 1]
    return (rng.poisson(np.clip(x, 0, 1) * c) / c).astype(np.float32)


@corruption("impulse_noise")
def impulse_noise(x, s, rng):
    amount = [0.01, 0.02, 0.03, 0.05, 0.07][s - 1]
    u = rng.random(x.shape)
    out = x.copy()
    out[u < amount / 2] = 0.0
    out[u > 1 - amount / 2] = 1.0
    return out


@corruption("defocus_blur")
def defocus_blur(x, s, rng):
    r = [0.6, 0.9, 1.2, 1.6, 2.0][s - 1]
    n = int(np.ceil(r))
    yy, xx = np.mgrid[-n : n + 1, -n : n + 1]
    disk = np.clip(r + 0.5 - np.sqrt(xx**2 + yy**2), 0, 1)  # anti-aliased disk (a lens's circle of confusion)
    return _conv(x, disk.astype(np.float32))


@corruption("motion_blur")
def motion_blur(x, s, rng):
    length = [2, 3, 4, 5, 7][s - 1]
    angle = rng.uniform(0, np.pi)
    n = length
    kernel = np.zeros((2 * n + 1, 2 * n + 1), np.float32)
    for t in np.linspace(0, length, 4 * length + 1):
        kernel[round(n + t * np.sin(angle)), round(n + t * np.cos(angle))] = 1.0
    return _conv(x, kernel)


def _smooth_field(rng: np.random.Generator, n: int, hw: tuple[int, int], cells: int = 4) -> np.ndarray:
    """Low-frequency random field in [0, 1], one per image (fog density)."""
    coarse = torch.as_tensor(rng.random((n, 1, cells, cells)), dtype=torch.float32)
    return F.interpolate(coarse, size=hw, mode="bicubic", align_corners=False).clamp(0, 1).numpy()


@corruption("fog")
def fog(x, s, rng):
    a = [0.25, 0.35, 0.45, 0.55, 0.65][s - 1]
    density = a * (0.6 + 0.4 * _smooth_field(rng, len(x), x.shape[2:]))
    return x * (1 - density) + 0.75 * density


@corruption("snow")
def snow(x, s, rng):
    p, bright = [(0.02, 0.05), (0.04, 0.1), (0.06, 0.15), (0.09, 0.2), (0.12, 0.25)][s - 1]
    flakes = (rng.random((len(x), 1, *x.shape[2:])) < p).astype(np.float32)
    star = np.array([[0.3, 1, 0.3], [1, 1, 1], [0.3, 1, 0.3]], np.float32)
    flakes = np.clip(_conv(np.repeat(flakes, x.shape[1], axis=1), star) * 4.0, 0, 1)
    return np.maximum(x * (1 - bright) + bright, flakes * 0.95)


@corruption("rain")
def rain(x, s, rng):
    p, length = [(0.01, 3), (0.02, 4), (0.03, 5), (0.04, 6), (0.05, 7)][s - 1]
    drops = (rng.random((len(x), 1, *x.shape[2:])) < p).astype(np.float32)
    kernel = np.zeros((2 * length + 1, 2 * length + 1), np.float32)
    for t in range(-length, length + 1):
        kernel[length + t, length + t // 3] = 1.0
    streaks = np.clip(_conv(np.repeat(drops, x.shape[1], axis=1), kernel) * length, 0, 1)
    return x * (1 - 0.15 * s / 5) + 0.6 * streaks


@corruption("brightness")
def brightness(x, s, rng):
    return x + [0.1, 0.2, 0.3, 0.4, 0.5][s - 1]


@corruption("night")
def night(x, s, rng):
    f, noise = [(0.6, 0.01), (0.45, 0.015), (0.3, 0.02), (0.2, 0.03), (0.12, 0.04)][s - 1]
    return x * f + rng.normal(0, noise, x.shape).astype(np.float32)


@corruption("contrast")
def contrast(x, s, rng):
    c = [0.75, 0.5, 0.4, 0.3, 0.15][s - 1]
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - m) * c + m


@corruption("jpeg")
def jpeg(x, s, rng):
    q = [80, 65, 58, 50, 40][s - 1]
    out = np.empty_like(x)
    for i, img in enumerate((np.clip(x, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)):
        buf = io.BytesIO()
        Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(buf, format="JPEG", quality=q)
        out[i] = np.asarray(Image.open(buf)).reshape(img.shape).transpose(2, 0, 1) / 255.0
    return out


@corruption("pixelate")
def pixelate(x, s, rng):
    frac = [24, 20, 14, 12, 10][s - 1] / 32  # the fractions tuned on 32x32 signs
    h, w = x.shape[2:]
    t = F.interpolate(torch.as_tensor(x), size=(max(1, round(h * frac)), max(1, round(w * frac))), mode="area")
    return F.interpolate(t, size=(h, w), mode="nearest").numpy()


@corruption("occlusion")
def occlusion(x, s, rng, sizes: np.ndarray | None = None):
    side = [3, 5, 7, 9, 11][s - 1]
    out = x.copy()
    n = len(x)
    extent = np.full(n, min(x.shape[2:])) if sizes is None else np.maximum(sizes, side)
    colour = np.where(rng.random((n, 1)) < 0.5, rng.uniform(0, 0.25, (n, 3)), rng.uniform(0.3, 1.0, (n, 3)))
    for i in range(n):
        top, left = rng.integers(0, extent[i] - side + 1, size=2)
        out[i, :, top : top + side, left : left + side] = colour[i, : x.shape[1]].reshape(-1, 1, 1)
    return out


def canvas_mask(sizes: np.ndarray, hw: tuple[int, int] = (32, 32)) -> np.ndarray:
    """1 inside each sign's top-left square, 0 on the black canvas; shape (N, 1, H, W)."""
    rows, cols = np.arange(hw[0]), np.arange(hw[1])
    inside = (rows[None, :, None] < sizes[:, None, None]) & (cols[None, None, :] < sizes[:, None, None])
    return inside[:, None].astype(np.float32)


def corrupt(x: np.ndarray, name: str, severity: int, sizes: np.ndarray, seed: int = 0) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (1-5) to float NCHW images; same seed, same output."""
    if name not in CORRUPTIONS:
        raise KeyError(f"unknown corruption '{name}' (known: {', '.join(CORRUPTIONS)})")
    if severity not in range(1, 6):
        raise ValueError(f"severity must be 1-5, got {severity}")
    rng = np.random.default_rng([seed, severity, sorted(CORRUPTIONS).index(name)])
    fn = CORRUPTIONS[name]
    y = fn(x, severity, rng, sizes=sizes) if name == "occlusion" else fn(x, severity, rng)
    return (np.clip(y, 0.0, 1.0) * canvas_mask(sizes, x.shape[2:])).astype(np.float32)

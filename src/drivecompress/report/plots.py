"""Matplotlib figures as base64 PNGs (embedded, so report.html is one self-contained file)."""

from __future__ import annotations

import base64
import io
import textwrap
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def tradeoff(points: list[tuple[str, dict[str, Any]]], x_key: str, x_label: str) -> str:
    """Accuracy against latency or size for the input model and every step."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    xs = [m[x_key] / (1024 if x_key == "size_bytes" else 1) for _, m in points]
    ys = [100 * m["accuracy"] for _, m in points]
    ax.plot(xs, ys, "-", color="#999", lw=1)
    for (name, _), x, y in zip(points, xs, ys, strict=True):
        ax.scatter([x], [y], s=40, zorder=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel(x_label)
    ax.set_ylabel("top-1 accuracy (%)")
    mid = (max(ys) + min(ys)) / 2  # at least one point of accuracy on the axis: 0.03 points must look small
    half = max(0.5, (max(ys) - min(ys)) / 2 * 1.2)
    ax.set_ylim(mid - half, mid + half)
    ax.grid(alpha=0.3)
    return _png(fig)


def recall_deltas(baseline: list[float], final: list[float], safety: frozenset[int] = frozenset()) -> str:
    """Per-class recall change (points), safety-critical classes in red."""
    deltas = [100 * (f - b) for b, f in zip(baseline, final, strict=True)]
    fig, ax = plt.subplots(figsize=(10, 3.2))
    colors = ["#c0392b" if c in safety else "#7f8c8d" for c in range(len(deltas))]
    ax.bar(range(len(deltas)), deltas, color=colors)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(deltas)))
    ax.set_xticklabels([str(c) for c in range(len(deltas))], fontsize=7)
    ax.set_xlabel("class (red: safety-critical)")
    ax.set_ylabel("recall change (points)")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def reliability_diagram(bins: list[dict[str, float]], title: str = "") -> str:
    """Accuracy vs confidence per bin against the diagonal of perfect calibration."""
    fig, ax = plt.subplots(figsize=(4, 4))
    full = [b for b in bins if b["count"]]
    ax.plot([0, 1], [0, 1], "--", color="#999")
    ax.bar([(b["lo"] + b["hi"]) / 2 for b in full], [b["accuracy"] for b in full],
           width=[(b["hi"] - b["lo"]) * 0.9 for b in full], alpha=0.7)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    return _png(fig)


def contact_sheet(images: list[list]) -> bytes:
    """Rows of float CHW images in [0, 1] tiled into one PNG (raw bytes), e.g. corruption x severity."""
    import numpy as np

    rows = [np.concatenate([im.transpose(1, 2, 0) for im in row], axis=1) for row in images]
    sheet = (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).astype("uint8")
    fig = plt.figure(figsize=(sheet.shape[1] / 40, sheet.shape[0] / 40), dpi=120)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(sheet, interpolation="nearest")
    ax.axis("off")
    return base64.b64decode(_png(fig))


def stretch(img: np.ndarray) -> np.ndarray:
    """Per-image min-max contrast stretch to the full 0-255 range, for display only: many GTSRB test images
    are so dark that a sign is invisible at its true brightness (and dark images are what int8 loses)."""
    lo, hi = int(img.min()), int(img.max())
    if hi <= lo:
        return img
    return ((img.astype(np.float32) - lo) * (255.0 / (hi - lo))).round().astype(np.uint8)


def thumbnails(images, captions: list[str], cols: int = 8) -> str:
    """uint8 HWC images in a grid, each captioned (e.g. "stop → yield", wrapped to the thumbnail's width) and
    contrast-stretched for viewing (``stretch``): what a safety engineer looks at."""
    n = len(images)
    rows = max(1, -(-n // cols))
    lines = [textwrap.fill(c, 22) for c in captions]
    height = 1.2 + 0.12 * max((t.count("\n") + 1 for t in lines), default=1)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.45, rows * height), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = stretch(np.asarray(images[i]))
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", interpolation="nearest")
            ax.set_title(lines[i], fontsize=6)
    fig.suptitle("contrast stretched per image for viewing", fontsize=7)
    fig.tight_layout()
    return _png(fig)

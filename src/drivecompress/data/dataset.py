"""In-memory labelled image sets and the train/val/test views the commands use.

All of GTSRB fits in memory as uint8, so batches are sliced from one tensor and augmented on the device:
no DataLoader workers competing with the two CPU cores for compute.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from drivecompress.data.gtsrb import GTSRB, sign_sizes
from drivecompress.data.splits import track_split
from drivecompress.data.transforms import to_tensor_batch


@dataclass(frozen=True)
class LabeledImages:
    """uint8 NHWC images, int64 labels, each sign's size in pixels, and (when known) each image's group: the
    physical sign it shows, the unit of evidence of the gate."""

    x: np.ndarray
    y: np.ndarray
    sizes: np.ndarray
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> LabeledImages:
        return cls(x=x, y=np.asarray(y, dtype=np.int64), sizes=sign_sizes(x), groups=groups)

    def subset(self, idx: np.ndarray) -> LabeledImages:
        return LabeledImages(self.x[idx], self.y[idx], self.sizes[idx],
                             None if self.groups is None else self.groups[idx])

    def head(self, n: int | None, seed: int = 0) -> LabeledImages:
        """A random subset of ``n`` images (all when n is None or larger): for quick runs and tests."""
        if n is None or n >= len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return self.subset(idx)

    def batches(
        self, batch_size: int, device: torch.device | str = "cpu"
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Ordered float batches in [0, 1] (NCHW) with labels, for evaluation."""
        for i in range(0, len(self), batch_size):
            yield (
                to_tensor_batch(self.x[i : i + batch_size], device),
                torch.as_tensor(self.y[i : i + batch_size], device=device),
            )


@dataclass(frozen=True)
class Splits:
    """Track-aware train/validation split of the training set, plus the official test set."""

    train: LabeledImages
    val: LabeledImages
    test: LabeledImages


def make_splits(data: GTSRB, val_fraction: float = 0.1, seed: int = 0) -> Splits:
    """Split by physical sign (class, track) so validation never sees frames of a training sign."""
    tr, va = track_split(data.y_train, data.track_train, val_fraction=val_fraction, seed=seed)
    full = LabeledImages.of(data.x_train, data.y_train)
    return Splits(train=full.subset(tr), val=full.subset(va), test=LabeledImages.of(data.x_test, data.y_test))


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of uint8 NHWC images in [0, 1] units (normalization from the training split)."""
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return x.mean(axis=0).round(6).tolist(), x.std(axis=0).round(6).tolist()

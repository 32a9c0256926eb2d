"""Track-aware train/validation split: a physical sign (class, track) never lands on both sides.

GTSRB holds ~30 frames of each physical sign; splitting by image leaks near-duplicates into validation and
makes validation accuracy lie.
"""

from __future__ import annotations

import numpy as np


def track_split(
    labels: np.ndarray, tracks: np.ndarray, val_fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return (train_idx, val_idx), choosing whole tracks per class so every class appears in validation."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    val_mask = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        cls_tracks = np.unique(tracks[labels == cls])
        n_val = max(1, round(len(cls_tracks) * val_fraction)) if len(cls_tracks) > 1 else 0
        chosen = rng.choice(cls_tracks, size=n_val, replace=False)
        val_mask |= (labels == cls) & np.isin(tracks, chosen)
    return np.flatnonzero(~val_mask), np.flatnonzero(val_mask)

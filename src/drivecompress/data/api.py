"""``drivecompress.Data``: the user's images and labels, with everything the techniques must not assume.

Class count, class names, input size and channels, and the safety-critical set come from here (the npz, an
image folder, or the user's arrays), never from constants: GTSRB is the shipped example, not an assumption.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivecompress.data.dataset import LabeledImages, Splits
from drivecompress.data.splits import track_split
from drivecompress.errors import BadInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")


@dataclass(frozen=True)
class Data:
    """Train/validation/test images (uint8 NHWC) plus the class metadata every metric and gate reads.

    Validation is split from the training set by ``groups`` (e.g. GTSRB's physical-sign tracks) so that no
    group is on both sides; without groups each image is its own group.
    """

    splits: Splits
    class_names: tuple[str, ...]
    safety_critical: frozenset[int]
    source: str = "arrays"
    test_track_length: int | None = None  # recover test tracks of at most this many frames when none are given

    def test_groups(self, test: LabeledImages | None = None) -> tuple[np.ndarray | None, str]:
        """Each test image's physical sign, for the gate: given with the data, else recovered as near-duplicate
        chains (``data/tracks.py``) when the data's tracks have a known length, else none (images count as
        independent). ``test`` is the split or a subset of it (``head``); the second item says which."""
        test = self.test if test is None else test
        if test.groups is not None:
            return test.groups, "given with the data"
        if self.test_track_length:
            from drivecompress.data.tracks import recover_tracks

            return (recover_tracks(test.x, test.y, max_track=self.test_track_length),
                    f"recovered as near-duplicate chains of at most {self.test_track_length} frames")
        return None, "none: images treated as independent"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the model input (NCHW without the batch)."""
        _, h, w, c = self.splits.train.x.shape
        return int(c), int(h), int(w)

    @property
    def train(self) -> LabeledImages:
        return self.splits.train

    @property
    def val(self) -> LabeledImages:
        return self.splits.val

    @property
    def test(self) -> LabeledImages:
        return self.splits.test

    def fingerprint(self) -> str:
        """sha256 of every image and label of every split, the class names and the safety set (what a resumed
        run must find unchanged)."""
        import hashlib

        h = hashlib.sha256()
        for part in (self.train, self.val, self.test):
            h.update(np.ascontiguousarray(part.x).tobytes())
            h.update(np.ascontiguousarray(part.y).tobytes())
        h.update(repr((list(self.class_names), sorted(self.safety_critical))).encode())
        return h.hexdigest()

    def example_input(self, batch: int = 1):
        """A float32 NCHW tensor of the model's input shape (for tracing, MAC counting, pruning graphs)."""
        import torch

        return torch.rand(batch, *self.input_shape)

    @classmethod
    def from_arrays(
        cls,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_test: np.ndarray,
        y_test: np.ndarray,
        *,
        class_names: Sequence[str] | None = None,
        safety_critical: Iterable[int] | None = None,
        groups: np.ndarray | None = None,
        test_groups: np.ndarray | None = None,
        test_track_length: int | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        source: str = "arrays",
    ) -> Data:
        """Images uint8 NHWC (1 or 3 channels, any size, train and test alike), integer labels 0..K-1.

        ``class_names`` fixes K (else the largest label + 1); ``safety_critical`` lists the classes whose recall
        the gate refuses on (default: none; every class is still tested and warned about). ``groups`` and
        ``test_groups`` give each image's physical object (a track of video frames of one sign): validation is
        split by them and the gate counts evidence in them; without ``test_groups``, ``test_track_length``
        recovers near-duplicate chains of at most that many frames, else test images count as independent.
        """
        x_train = _images(x_train, "x_train")
        x_test = _images(x_test, "x_test")
        if x_train.shape[1:] != x_test.shape[1:]:
            raise BadInputError(f"x_test: images of shape {x_test.shape[1:]}, x_train has {x_train.shape[1:]}")
        k = len(class_names) if class_names is not None else None
        y_train = _labels(y_train, "y_train", len(x_train), k)
        y_test = _labels(y_test, "y_test", len(x_test), k)
        if k is None:
            k = int(max(y_train.max(initial=-1), y_test.max(initial=-1))) + 1
        names = tuple(str(n) for n in class_names) if class_names is not None else tuple(str(i) for i in range(k))
        safety = frozenset(int(c) for c in (safety_critical or ()))
        bad = sorted(c for c in safety if not 0 <= c < k)
        if bad:
            raise BadInputError(f"safety_critical: classes {bad} are outside [0, {k - 1}]")
        if groups is None:
            groups = np.arange(len(y_train))
        groups = _labels(groups, "groups", len(x_train), None)
        if test_groups is not None:
            test_groups = _labels(test_groups, "test_groups", len(x_test), None)
        if test_track_length is not None and not (isinstance(test_track_length, int) and test_track_length >= 1):
            raise BadInputError(f"test_track_length: {test_track_length!r}, expected a whole number >= 1")
        tr, va = track_split(y_train, groups, val_fraction=val_fraction, seed=seed)
        if len(tr) == 0:
            raise BadInputError("x_train: too few images to split off a validation set")
        full = LabeledImages.of(x_train, y_train)
        splits = Splits(train=full.subset(tr), val=full.subset(va), test=LabeledImages.of(x_test, y_test, test_groups))
        return cls(splits=splits, class_names=names, safety_critical=safety, source=source,
                   test_track_length=test_track_length)

    @classmethod
    def from_npz(cls, path: str | os.PathLike | None = None, *, val_fraction: float = 0.1, seed: int = 0) -> Data:
        """The project's npz format (``x_train, y_train, track_train, x_test, y_test``, optional ``track_test``;
        see DESIGN.md) with GTSRB's class names and safety-critical set. Without ``track_test`` the gate
        recovers the test split's 30-frame tracks (``GTSRB_TRACK_LENGTH``)."""
        from drivecompress.data.classes import CLASS_NAMES, GTSRB_TRACK_LENGTH, SAFETY_CRITICAL
        from drivecompress.data.gtsrb import load_gtsrb

        g = load_gtsrb(path)
        return cls.from_arrays(g.x_train, g.y_train, g.x_test, g.y_test, class_names=CLASS_NAMES,
                               safety_critical=SAFETY_CRITICAL, groups=g.track_train, test_groups=g.track_test,
                               test_track_length=None if g.track_test is not None else GTSRB_TRACK_LENGTH,
                               val_fraction=val_fraction, seed=seed, source=str(g.path))

    @classmethod
    def from_folder(cls, root: str | os.PathLike, *, safety_critical: Iterable[str | int] | None = None,
                    seed: int = 0) -> Data:
        """``root/train/<class>/*.png|jpg|ppm`` and ``root/test/<class>/...``; class names are the folder
        names in sorted order; images are read with Pillow and must all have one size."""
        root = Path(root)
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir()) if (root / "train").is_dir() else []
        if not classes:
            raise BadInputError(f"{root / 'train'}: no class folders (expected root/train/<class>/*.png)")
        x_tr, y_tr = _read_split(root / "train", classes)
        x_te, y_te = _read_split(root / "test", classes)
        index = {n: i for i, n in enumerate(classes)}
        safety = []
        for c in safety_critical or ():
            if isinstance(c, str) and c not in index:
                raise BadInputError(f"safety_critical: no class folder named {c!r} in {root / 'train'}")
            safety.append(index[c] if isinstance(c, str) else int(c))
        return cls.from_arrays(x_tr, y_tr, x_te, y_te, class_names=classes, safety_critical=safety, seed=seed,
                               source=str(root))


def _images(x: np.ndarray, key: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise BadInputError(f"{key}: dtype {x.dtype}, expected uint8 images")
    if x.ndim == 3:  # grayscale NHW
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise BadInputError(f"{key}: shape {x.shape}, expected (N, H, W, 3) or (N, H, W, 1) uint8")
    if len(x) == 0:
        raise BadInputError(f"{key}: no images")
    if min(x.shape[1:3]) < 8:
        raise BadInputError(f"{key}: images of {x.shape[1]}x{x.shape[2]} px are too small (at least 8x8)")
    return x


def _labels(y: np.ndarray, key: str, n: int, k: int | None) -> np.ndarray:
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        raise BadInputError(f"{key}: dtype {y.dtype}, expected integers")
    if y.shape != (n,):
        raise BadInputError(f"{key}: shape {y.shape}, expected ({n},) to match the images")
    if n and (y.min() < 0 or (k is not None and y.max() >= k)):
        raise BadInputError(f"{key}: values in [{y.min()}, {y.max()}], expected [0, {(k or 1) - 1}]"
                            if k else f"{key}: negative values")
    return y.astype(np.int64)


def _read_split(folder: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    if not folder.is_dir():
        raise BadInputError(f"{folder}: folder not found (expected {folder}/<class>/*.png)")
    xs, ys, shape = [], [], None
    for label, name in enumerate(classes):
        for f in sorted((folder / name).glob("*")) if (folder / name).is_dir() else []:
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            except (UnidentifiedImageError, OSError) as exc:
                raise BadInputError(f"{f}: not a readable image ({exc.__class__.__name__})") from exc
            if shape is not None and arr.shape != shape:
                raise BadInputError(f"{f}: {arr.shape[1]}x{arr.shape[0]} px, the others are {shape[1]}x{shape[0]}")
            shape = arr.shape
            xs.append(arr)
            ys.append(label)
    if not xs:
        raise BadInputError(f"{folder}: no images (.png/.jpg/.ppm) in any class folder")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)

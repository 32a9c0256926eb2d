"""Convert the official GTSRB archive layout into the project's npz (same contract as gtsrb32.npz).

Official layout: training images in per-class folders (``.../Images/00000/``) of ``.ppm`` files named
``TTTTT_FFFFF.ppm`` (track, frame) with a semicolon CSV ``GT-00000.csv`` holding
``Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId``; test images in one folder with their own CSV
(``GT-final_test.csv``). Each sign is cropped to its ROI and shrunk (never enlarged) to fit 32x32, keeping
its aspect ratio, then pasted at the top-left corner of a black canvas — exactly how gtsrb32.npz was made.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from rich.progress import track

from drivecompress.data.classes import NUM_CLASSES
from drivecompress.errors import BadInputError
from drivecompress.utils.io import atomic_write

_COLUMNS = ("Filename", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")
_CLASS_DIR = re.compile(r"^\d{5}$")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    header = rows[0].keys() if rows else []
    missing = [c for c in _COLUMNS if c not in header]
    if missing:
        raise BadInputError(f"{path}: missing column(s) {', '.join(missing)}")
    return rows


def sign_to_canvas(img: Image.Image, roi: tuple[int, int, int, int], size: int = 32) -> np.ndarray:
    """Crop to the ROI (inclusive corners), shrink to fit ``size`` (never enlarge), paste at top-left."""
    x1, y1, x2, y2 = roi
    crop = img.convert("RGB").crop((x1, y1, x2 + 1, y2 + 1))
    w, h = crop.size
    scale = min(1.0, size / max(w, h))
    if scale < 1.0:
        crop = crop.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    arr = np.asarray(crop)
    canvas[: arr.shape[0], : arr.shape[1]] = arr
    return canvas


def _convert(csv_path: Path, rows: Iterable[dict[str, str]], label: str) -> tuple[list, list, list]:
    images, labels, tracks = [], [], []
    for row in track(list(rows), description=label, transient=True):
        img_path = csv_path.parent / row["Filename"]
        try:
            cls = int(row["ClassId"])
            roi = tuple(int(row[k]) for k in ("Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2"))
        except ValueError as exc:
            raise BadInputError(f"{csv_path}: row for {row['Filename']}: {exc}") from exc
        if not 0 <= cls < NUM_CLASSES:
            raise BadInputError(f"{csv_path}: row for {row['Filename']}: ClassId {cls} outside [0, {NUM_CLASSES - 1}]")
        try:
            with Image.open(img_path) as img:
                images.append(sign_to_canvas(img, roi))
        except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
            raise BadInputError(f"{img_path}: cannot read image ({exc.__class__.__name__})") from exc
        labels.append(cls)
        m = re.match(r"^(\d+)_\d+", Path(row["Filename"]).stem)
        tracks.append(int(m.group(1)) if m else -1)
    return images, labels, tracks


def import_gtsrb(root: str | Path, out: str | Path, overwrite: bool = False) -> dict[str, int]:
    """Find every ``GT-*.csv`` under ``root``: those in 5-digit class folders are training data, the rest
    test data. Write the npz atomically and return the counts."""
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise BadInputError(f"{root}: not a folder")
    if out.exists() and not overwrite:
        raise BadInputError(f"{out}: already exists; choose another output or pass --overwrite")
    csvs = sorted(root.rglob("GT-*.csv"))
    train_csvs = [c for c in csvs if _CLASS_DIR.match(c.parent.name)]
    test_csvs = [c for c in csvs if c not in train_csvs]
    if not train_csvs:
        raise BadInputError(f"{root}: no training annotations found (expected <class>/GT-<class>.csv files)")
    if not test_csvs:
        raise BadInputError(f"{root}: no test annotations found (expected a GT-*.csv beside the test images)")
    xs, ys, ts = [], [], []
    for c in train_csvs:
        i, lab, tr = _convert(c, _read_csv(c), f"train {c.parent.name}")
        xs += i
        ys += lab
        ts += tr
    xt, yt = [], []
    for c in test_csvs:
        i, lab, _ = _convert(c, _read_csv(c), "test")
        xt += i
        yt += lab
    arrays = {
        "x_train": np.stack(xs).astype(np.uint8),
        "y_train": np.asarray(ys, dtype=np.int64),
        "track_train": np.asarray(ts, dtype=np.int64),
        "x_test": np.stack(xt).astype(np.uint8),
        "y_test": np.asarray(yt, dtype=np.int64),
    }

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            np.savez_compressed(fh, **arrays)

    atomic_write(out, write)
    return {"train_images": len(ys), "test_images": len(yt), "tracks": len(set(zip(ys, ts, strict=True)))}

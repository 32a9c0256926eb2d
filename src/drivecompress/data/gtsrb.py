"""Load and validate the GTSRB npz (DESIGN.md data contract) and find it by the documented location rules."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivecompress.data.classes import NUM_CLASSES
from drivecompress.errors import BadInputError

REQUIRED_KEYS = ("x_train", "y_train", "track_train", "x_test", "y_test")
ENV_VAR = "DRIVECOMPRESS_DATA"


@dataclass(frozen=True)
class GTSRB:
    """The whole data set in memory as uint8 HWC images (39k + 12.6k images at 32x32 is ~160 MB)."""

    x_train: np.ndarray
    y_train: np.ndarray
    track_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    path: Path | None = None
    track_test: np.ndarray | None = None  # optional key: the test split's physical signs


def repo_root() -> Path:
    """The repository root when running from a source checkout (src layout: three levels up)."""
    return Path(__file__).resolve().parents[3]


def shipped(name: str) -> Path:
    """A shipped folder (``baseline``, ``searched``, ``recipes``): the checkout's top-level one, else the copy
    the wheel carries inside the package (``drivecompress/_shipped``, written by setup.py)."""
    checkout = repo_root() / name
    if checkout.exists():
        return checkout
    from importlib.resources import files

    return Path(str(files("drivecompress"))) / "_shipped" / name


def repo_path(path: str | os.PathLike) -> Path:
    """A path a recipe names: absolute, or relative to the working directory, else to the repository root (so
    the shipped recipes' ``runs/...`` and ``baseline`` work from any directory of a checkout), else inside the
    installed package's shipped folders (``recipes/int8-ptq.yaml`` from a wheel)."""
    p = Path(path)
    if p.is_absolute() or p.exists() or (repo_root() / p).exists():
        return p if p.is_absolute() or p.exists() else repo_root() / p
    if p.parts and p.parts[0] in ("baseline", "searched", "recipes") and shipped(p.parts[0]).exists():
        return shipped(p.parts[0]).joinpath(*p.parts[1:])
    return repo_root() / p


def resolve_data_path(explicit: str | os.PathLike | None = None) -> Path:
    """Apply DESIGN.md's rule: --data, else $DRIVECOMPRESS_DATA, else ../shared/datasets, else data/."""
    if explicit:
        return Path(explicit)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    candidates = [
        repo_root().parent / "shared" / "datasets" / "gtsrb32.npz",
        Path.cwd().parent / "shared" / "datasets" / "gtsrb32.npz",
        Path("data") / "gtsrb32.npz",
    ]
    for cand in candidates:
        if cand.exists():
            return cand
    return candidates[0]


def _check_images(path: Path, key: str, arr: np.ndarray) -> None:
    if arr.dtype != np.uint8:
        raise BadInputError(f"{path}: key '{key}' has dtype {arr.dtype}, expected uint8")
    if arr.ndim != 4 or arr.shape[1:] != (32, 32, 3):
        raise BadInputError(f"{path}: key '{key}' has shape {arr.shape}, expected (N, 32, 32, 3)")


def _check_labels(path: Path, key: str, arr: np.ndarray, n: int, upper: int | None) -> None:
    if not np.issubdtype(arr.dtype, np.integer):
        raise BadInputError(f"{path}: key '{key}' has dtype {arr.dtype}, expected an integer type")
    if arr.shape != (n,):
        raise BadInputError(f"{path}: key '{key}' has shape {arr.shape}, expected ({n},)")
    if n and (arr.min() < 0 or (upper is not None and arr.max() >= upper)):
        bound = f"[0, {upper - 1}]" if upper is not None else ">= 0"
        raise BadInputError(
            f"{path}: key '{key}' holds values in [{arr.min()}, {arr.max()}], expected {bound}"
        )


def load_gtsrb(path: str | os.PathLike | None = None) -> GTSRB:
    """Load and validate the npz; any problem raises BadInputError naming the file and key.

    The file is opened with ``allow_pickle=False``: a data file must never be able to run code.
    """
    p = resolve_data_path(path)
    if not p.exists():
        raise BadInputError(f"{p}: data file not found (use --data PATH or set ${ENV_VAR})")
    try:
        with np.load(p, allow_pickle=False) as npz:
            missing = [k for k in REQUIRED_KEYS if k not in npz.files]
            if missing:
                raise BadInputError(f"{p}: missing key(s) {', '.join(missing)} (has: {', '.join(npz.files)})")
            arrays = {k: npz[k] for k in REQUIRED_KEYS}
            track_test = npz["track_test"] if "track_test" in npz.files else None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        if isinstance(exc, BadInputError):
            raise
        raise BadInputError(f"{p}: not a readable npz file ({exc.__class__.__name__}: {exc})") from exc
    _check_images(p, "x_train", arrays["x_train"])
    _check_images(p, "x_test", arrays["x_test"])
    _check_labels(p, "y_train", arrays["y_train"], len(arrays["x_train"]), NUM_CLASSES)
    _check_labels(p, "track_train", arrays["track_train"], len(arrays["x_train"]), None)
    _check_labels(p, "y_test", arrays["y_test"], len(arrays["x_test"]), NUM_CLASSES)
    if track_test is not None:
        _check_labels(p, "track_test", track_test, len(arrays["x_test"]), None)
        track_test = track_test.astype(np.int64) + arrays["y_test"].astype(np.int64) * (int(track_test.max()) + 1)
    return GTSRB(
        x_train=arrays["x_train"],
        y_train=arrays["y_train"].astype(np.int64),
        track_train=arrays["track_train"].astype(np.int64),
        x_test=arrays["x_test"],
        y_test=arrays["y_test"].astype(np.int64),
        path=p,
        track_test=track_test,
    )


def sign_extent(images: np.ndarray, threshold: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(height, width) in pixels of each sign: the extent of the non-black region anchored at the top-left.

    The npz pastes every sign at the top-left corner of a black canvas, so the last non-black row/column
    gives the sign's extent."""
    lit = images.max(axis=3) > threshold  # (N, H, W)
    rows = lit.any(axis=2)
    cols = lit.any(axis=1)
    h = np.where(rows.any(axis=1), rows.shape[1] - np.argmax(rows[:, ::-1], axis=1), 0)
    w = np.where(cols.any(axis=1), cols.shape[1] - np.argmax(cols[:, ::-1], axis=1), 0)
    return h.astype(np.int64), w.astype(np.int64)


def sign_sizes(images: np.ndarray, threshold: int = 0) -> np.ndarray:
    """Side length in pixels of each sign (the larger of ``sign_extent``): for accuracy-by-size and for
    size-aware augmentation."""
    h, w = sign_extent(images, threshold)
    return np.maximum(h, w)


SIZE_BINS: tuple[tuple[str, int, int], ...] = (("<14px", 0, 14), ("14-20px", 14, 20), ("20-32px", 20, 33))

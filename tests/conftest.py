"""The one fixtures module: tiny models, tiny data subsets, tiny synthetic archives and npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from drivecompress.data.api import Data
from drivecompress.data.classes import CLASS_NAMES, SAFETY_CRITICAL
from drivecompress.data.dataset import LabeledImages, make_splits
from drivecompress.data.gtsrb import GTSRB, load_gtsrb, resolve_data_path
from drivecompress.models import build_model, default_spec

TINY_WIDTH = 0.25


@pytest.fixture(scope="session")
def gtsrb() -> GTSRB:
    """The real data set (../shared/datasets/gtsrb32.npz beside the clone, as in CI)."""
    path = resolve_data_path()
    if not path.exists():
        pytest.fail(f"GTSRB npz not found at {path}: tests need ../shared/datasets/gtsrb32.npz or $DRIVECOMPRESS_DATA")
    return load_gtsrb(path)


@pytest.fixture(scope="session")
def splits(gtsrb):
    return make_splits(gtsrb, val_fraction=0.1, seed=0)


@pytest.fixture(scope="session")
def data(gtsrb) -> Data:
    """The whole data set as the public ``Data`` (class names and safety set from the npz's GTSRB classes)."""
    return Data.from_arrays(gtsrb.x_train, gtsrb.y_train, gtsrb.x_test, gtsrb.y_test, class_names=CLASS_NAMES,
                            safety_critical=SAFETY_CRITICAL, groups=gtsrb.track_train)


@pytest.fixture(scope="session")
def mini_data(gtsrb) -> Data:
    """A small ``Data`` (8,000 random training images, split by track; 600 test images) for techniques that
    train."""
    idx = np.sort(np.random.default_rng(0).choice(len(gtsrb.y_train), 8000, replace=False))
    te = np.random.default_rng(1).choice(len(gtsrb.y_test), 600, replace=False)
    return Data.from_arrays(gtsrb.x_train[idx], gtsrb.y_train[idx], gtsrb.x_test[te], gtsrb.y_test[te],
                            class_names=CLASS_NAMES, safety_critical=SAFETY_CRITICAL, groups=gtsrb.track_train[idx])


@pytest.fixture(scope="session")
def test_subset(splits) -> LabeledImages:
    """500 test images: enough to exercise every metric, quick on 2 cores."""
    return splits.test.head(500, seed=1)


def tiny_model(arch: str, seed: int = 0) -> torch.nn.Module:
    """A quarter-width model of a family, deterministic weights and non-trivial BN statistics."""
    torch.manual_seed(seed)
    model = build_model(default_spec(arch, TINY_WIDTH))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(params=["vgg", "resnet", "mobilenetv2"])
def arch(request) -> str:
    return request.param


def random_images(n: int, seed: int = 0) -> np.ndarray:
    """float32 NCHW in [0, 1], the deploy input."""
    return np.random.default_rng(seed).random((n, 3, 32, 32), dtype=np.float32)


def write_npz(path: Path, **overrides) -> Path:
    """A small valid npz in the gtsrb32 format; keyword overrides (value None drops a key) make it bad."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (86, 32, 32, 3), dtype=np.uint8),
        "y_train": np.repeat(np.arange(43), 2),
        "track_train": np.tile(np.arange(2), 43),
        "x_test": rng.integers(0, 256, (43, 32, 32, 3), dtype=np.uint8),
        "y_test": np.arange(43),
    }
    for k, v in overrides.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="session")
def trained_nets(mini_data) -> dict[str, torch.nn.Module]:
    """The three non-zoo networks of tests/nets.py, trained briefly on ``mini_data`` so that their predictions
    mean something (quantization and distillation are judged on agreement of predictions)."""
    from drivecompress.train.loop import TrainConfig, fit

    from .nets import NETS, make_net

    out = {}
    for name in NETS:
        net = make_net(name)
        fit(net, mini_data.train, mini_data.val.head(300), TrainConfig(epochs=5, lr=0.1, batch_size=64, augment=False,
            channels_last=False, amp="off", warmup_frac=0.1), torch.device("cpu"), description=f"fixture {name}")
        out[name] = net.eval()
    return out

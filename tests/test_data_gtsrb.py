import numpy as np
import pytest

from drivecompress.cli import main
from drivecompress.data.classes import CLASS_NAMES, NUM_CLASSES, SAFETY_CRITICAL
from drivecompress.data.dataset import channel_stats
from drivecompress.data.gtsrb import load_gtsrb, resolve_data_path, sign_sizes
from drivecompress.errors import BadInputError

from .conftest import write_npz


def test_real_data_contract(gtsrb):
    assert gtsrb.x_train.shape == (39209, 32, 32, 3) and gtsrb.x_train.dtype == np.uint8
    assert gtsrb.x_test.shape == (12630, 32, 32, 3)
    assert gtsrb.y_train.max() == 42 and gtsrb.y_test.min() == 0


def test_class_metadata():
    assert len(CLASS_NAMES) == NUM_CLASSES == 43
    assert CLASS_NAMES[14] == "stop" and CLASS_NAMES[38] == "keep right"
    assert {0, 8, 9, 10, 14, 17, 27, 28, 38, 39} <= SAFETY_CRITICAL
    assert 16 not in SAFETY_CRITICAL and max(SAFETY_CRITICAL) == 39


def test_channel_stats_from_hand_made_images():
    x = np.zeros((2, 2, 2, 3), np.uint8)
    x[0] = 255  # half the pixels white, half black: mean 0.5, std 0.5 in every channel
    mean, std = channel_stats(x)
    assert mean == pytest.approx([0.5] * 3) and std == pytest.approx([0.5] * 3)


def test_sign_sizes_on_hand_made_canvases():
    x = np.zeros((3, 32, 32, 3), np.uint8)
    x[0, :10, :7] = 50  # 10 rows x 7 cols -> 10
    x[1, :32, :32, 2] = 1
    assert sign_sizes(x).tolist() == [10, 32, 0]


def test_data_location_rules(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIVECOMPRESS_DATA", str(tmp_path / "env.npz"))
    assert resolve_data_path() == tmp_path / "env.npz"
    assert resolve_data_path(tmp_path / "x.npz") == tmp_path / "x.npz"
    monkeypatch.delenv("DRIVECOMPRESS_DATA")
    assert resolve_data_path().name == "gtsrb32.npz"


def test_valid_small_npz_loads(tmp_path):
    d = load_gtsrb(write_npz(tmp_path / "ok.npz"))
    assert len(d.x_train) == 86 and d.y_train.dtype == np.int64


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"y_test": None}, "missing key.*y_test"),
        ({"x_train": np.zeros((86, 28, 28, 3), np.uint8)}, "'x_train' has shape"),
        ({"x_test": np.zeros((43, 32, 32, 3), np.float32)}, "'x_test' has dtype float32"),
        ({"y_train": np.full(86, 43)}, "'y_train' holds values in \\[43, 43\\]"),
        ({"y_test": -np.ones(43, int)}, "'y_test' holds values"),
        ({"track_train": np.zeros(5, int)}, "'track_train' has shape"),
        ({"y_train": np.zeros(86, np.float32)}, "'y_train' has dtype"),
    ],
)
def test_bad_data_is_a_clear_error(tmp_path, override, message):
    path = write_npz(tmp_path / "bad.npz", **override)
    with pytest.raises(BadInputError, match=message) as info:
        load_gtsrb(path)
    assert str(path) in str(info.value)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        load_gtsrb(tmp_path / "nope.npz")
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(BadInputError, match="not a readable npz"):
        load_gtsrb(bad)


def test_pickled_object_arrays_are_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, x_train=np.array([object()], dtype=object))
    with pytest.raises(BadInputError):
        load_gtsrb(path)


def test_cli_bad_data_exits_2(tmp_path, capsys):
    path = write_npz(tmp_path / "bad.npz", y_train=np.full(86, 99))
    assert main(["eval", "baseline", "--data", str(path), "--subset", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "y_train" in err[0] and str(path) in err[0]

import numpy as np
import pytest
from PIL import Image

from drivecompress.cli import main
from drivecompress.data.gtsrb import load_gtsrb
from drivecompress.data.importer import import_gtsrb, sign_to_canvas
from drivecompress.errors import BadInputError

HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"


def _ppm(path, w, h, colour, roi):
    """An image whose ROI is ``colour`` and whose border (outside the ROI) is grey."""
    arr = np.full((h, w, 3), 128, np.uint8)
    x1, y1, x2, y2 = roi
    arr[y1 : y2 + 1, x1 : x2 + 1] = colour
    Image.fromarray(arr).save(path, format="PPM")


def build_archive(root, classes=(0, 14, 38), tracks=2, frames=2):
    """A miniature of the official layout: Final_Training/Images/<cls>/ and Final_Test/Images/."""
    for c in classes:
        d = root / "GTSRB" / "Final_Training" / "Images" / f"{c:05d}"
        d.mkdir(parents=True)
        lines = [HEADER]
        for t in range(tracks):
            for f in range(frames):
                name = f"{t:05d}_{f:05d}.ppm"
                w, h = (60, 50) if t == 0 else (24, 22)
                roi = (5, 5, w - 6, h - 6)
                _ppm(d / name, w, h, (c * 5, 200, 10), roi)
                lines.append(f"{name};{w};{h};{roi[0]};{roi[1]};{roi[2]};{roi[3]};{c}\n")
        (d / f"GT-{c:05d}.csv").write_text("".join(lines))
    t = root / "GTSRB" / "Final_Test" / "Images"
    t.mkdir(parents=True)
    lines = [HEADER]
    for i, c in enumerate(classes):
        name = f"{i:05d}.ppm"
        _ppm(t / name, 40, 40, (c * 5, 200, 10), (2, 2, 37, 37))
        lines.append(f"{name};40;40;2;2;37;37;{c}\n")
    (t / "GT-final_test.csv").write_text("".join(lines))
    return root


def test_import_tiny_archive(tmp_path):
    root = build_archive(tmp_path / "arch")
    out = tmp_path / "out.npz"
    counts = import_gtsrb(root, out)
    assert counts == {"train_images": 12, "test_images": 3, "tracks": 6}
    d = load_gtsrb(out)
    assert sorted(set(d.y_train.tolist())) == [0, 14, 38]
    assert sorted(set(d.track_train.tolist())) == [0, 1]
    # large ROI (50x40) shrunk to fit: width 32, height 26 (aspect kept), top-left, rest black
    big = d.x_train[(d.y_train == 14) & (d.track_train == 0)][0]
    assert big[:25, :31].min(axis=(0, 1)).tolist() == [70, 200, 10]
    assert big[27:].max() == 0
    # small ROI (14x12) never enlarged: sits in the corner at its own size
    small = d.x_train[(d.y_train == 14) & (d.track_train == 1)][0]
    assert small[:12, :14].reshape(-1, 3).tolist() == [[70, 200, 10]] * (12 * 14)
    assert small[12:].max() == 0 and small[:, 14:].max() == 0
    assert d.x_test.shape == (3, 32, 32, 3)


def test_roi_crop_excludes_border():
    img = Image.fromarray(np.full((30, 30, 3), 128, np.uint8))
    arr = np.asarray(img).copy()
    arr[10:20, 10:20] = 255
    canvas = sign_to_canvas(Image.fromarray(arr), (10, 10, 19, 19))
    assert canvas[:10, :10].min() == 255 and canvas[10:].max() == 0


def test_import_cli_and_errors(tmp_path, capsys):
    root = build_archive(tmp_path / "arch", classes=(1,), tracks=1, frames=1)
    out = tmp_path / "o.npz"
    assert main(["data", "import-gtsrb", str(root), "--out", str(out), "--json"]) == 0
    before = out.read_bytes()
    # refuses to overwrite, exit 2, file untouched
    assert main(["data", "import-gtsrb", str(root), "--out", str(out)]) == 2
    assert out.read_bytes() == before
    assert "already exists" in capsys.readouterr().err


def test_import_bad_archives(tmp_path):
    root = build_archive(tmp_path / "a", classes=(2,), tracks=1, frames=1)
    csv = root / "GTSRB" / "Final_Training" / "Images" / "00002" / "GT-00002.csv"
    csv.write_text(csv.read_text().replace("Roi.X1", "RoiX1"))
    with pytest.raises(BadInputError, match="missing column.*Roi.X1"):
        import_gtsrb(root, tmp_path / "x.npz")
    root2 = build_archive(tmp_path / "b", classes=(3,), tracks=1, frames=1)
    (root2 / "GTSRB" / "Final_Training" / "Images" / "00003" / "00000_00000.ppm").unlink()
    with pytest.raises(BadInputError, match="00000_00000.ppm: cannot read image"):
        import_gtsrb(root2, tmp_path / "y.npz")
    with pytest.raises(BadInputError, match="not a folder"):
        import_gtsrb(tmp_path / "missing", tmp_path / "z.npz")
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "y.npz").exists()

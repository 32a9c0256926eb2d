"""Test accuracy of checkpoint folders alone and as one TeacherEnsemble (mean of logits): is an ensemble a
stronger distillation teacher than its best member? Writes nothing.

    python scripts/ensemble_accuracy.py baseline runs/teacher_v1
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

import drivecompress as dc
from drivecompress.evaluate.predictor import TorchPredictor, predict_all


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="checkpoint folders (or 'baseline' / 'searched')")
    ap.add_argument("--data", default=None, help="npz (default: the project's GTSRB)")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    try:
        data = dc.Data.from_npz(a.data)
        x, y = data.test.x, data.test.y
        logits = [predict_all(TorchPredictor(dc.load_model(f).eval()), x) for f in a.folders]
    except dc.BadInputError as exc:
        print(f"ensemble_accuracy: error: {exc}", file=sys.stderr)
        return 2
    for f, z in zip(a.folders, logits, strict=True):
        print(f"{f}: {100 * (z.argmax(1) == y).mean():.2f}%")
    mean = np.mean(logits, axis=0)
    print(f"ensemble of {len(logits)} (mean logits): {100 * (mean.argmax(1) == y).mean():.2f}% "
          f"on {len(y):,} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Test accuracy of checkpoint folders alone and as one TeacherEnsemble (mean of logits): is an ensemble a
stronger distillation teacher than its best member? Writes nothing.

    python scripts/ensemble_accuracy.py baseline runs/teacher_v1
"""

from __future__ import annotations

import argparse
import sys

import drivecompress as dc
from drivecompress.evaluate.predictor import TorchPredictor, predict_all


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="checkpoint folders (or 'baseline' / 'searched')")
    ap.add_argument("--data", default=None, help="npz (default: the project's GTSRB)")
    a = ap.parse_args(argv)
    try:
        data = dc.Data.from_npz(a.data)
        models = [dc.load_model(f).eval() for f in a.folders]
    except dc.BadInputError as exc:
        print(f"ensemble_accuracy: error: {exc}", file=sys.stderr)
        return 2
    x, y = data.test.x, data.test.y
    for f, m in zip(a.folders, models, strict=True):
        print(f"{f}: {100 * (predict_all(TorchPredictor(m), x).argmax(1) == y).mean():.2f}%")
    # the very module a recipe's `teacher: [...]` distils from, not a re-implementation of it
    z = predict_all(TorchPredictor(dc.TeacherEnsemble(models)), x)
    print(f"ensemble of {len(models)} (mean logits): {100 * (z.argmax(1) == y).mean():.2f}% on {len(y):,} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which test images do compressed models lose, and how sure was the baseline of them?

For every image the baseline classifies right, counts how many of the given compressed models get it wrong,
and prints, per count, the number of images and the baseline's median margin on them (true-class probability
minus the highest other class probability). If losses were noise the counts would follow a binomial; if they
concentrate on images the baseline itself barely got right, the gate's lost images are largely the
baseline's coin-flip wins. Also prints how many lost images each pair of models shares.

    python benchmarks/bench_lost_images.py runs/dc91/steps/00-unstructured/done.json runs/student_t1/report.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from _common import predictions, print_table, save_results

from drivecompress.data.api import Data
from drivecompress.data.transforms import to_tensor_batch
from drivecompress.evaluate.loading import load_model_arg


def margins(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, batch: int = 1024) -> np.ndarray:
    """True-class probability minus the best other class's, per image."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(torch.softmax(model(to_tensor_batch(images[i:i + batch])).float(), 1))
    p = torch.cat(out).numpy()
    rows = np.arange(len(labels))
    true = p[rows, labels].copy()
    p[rows, labels] = -1
    return true - p.max(1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="report.json / done.json of compressed models")
    ap.add_argument("--baseline", default="baseline", help="checkpoint folder or 'baseline' (default)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_lost_images"))
    a = ap.parse_args()
    data = Data.from_npz()
    y = data.test.y
    model = load_model_arg(a.baseline).module.eval()
    m = margins(model, data.test.x, y)
    ok = m > 0
    lost = np.stack([ok & (predictions(r) != y) for r in a.runs])
    count = lost.sum(0)
    rows = [{"models_losing": k, "images": int((ok & (count == k)).sum()),
             "median_margin": float(np.median(m[ok & (count == k)])) if (ok & (count == k)).any() else None}
            for k in range(len(a.runs) + 1)]
    print_table(f"images the baseline gets right ({int(ok.sum())}), by how many of {len(a.runs)} compressed "
                "models lose them", ("lost by", "images", "baseline's median margin"),
                [(str(r["models_losing"]), str(r["images"]),
                  "-" if r["median_margin"] is None else f"{r['median_margin']:.2f}") for r in rows])
    names = [f"{r.parent.parent.parent.name}/{r.parent.name}" if r.name == "done.json" else r.parent.name
             for r in a.runs]
    print_table("lost images shared by two models (diagonal: lost by the model)", ["", *map(str, range(len(names)))],
                [(f"{i} {n}", *(str(int((lost[i] & lost[j]).sum())) for j in range(len(names))))
                 for i, n in enumerate(names)])
    save_results(a.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

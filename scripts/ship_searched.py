"""Ship a finalist of an architecture search as the repository's ``searched/`` (like ``baseline/``).

    .venv/bin/python scripts/ship_searched.py runs/search_s38 --trial 10 [--to searched] \
        [--command "drivecompress search ..."]... [--notes NOTES.md] [--retrained RUN]

Copies the finalist's checkpoint, int8 ``model.onnx`` and recipe (with ``--retrained RUN``, those of a
``compress`` run that trained the same network longer) and writes MODEL_CARD.md from the figures the run
recorded (``drivecompress.search.ship``); then re-reads the shipped int8 model on the full test set and checks
that it scores what the run recorded. ``--to`` must not exist.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from drivecompress.data.api import Data
from drivecompress.errors import BadInputError
from drivecompress.evaluate.loading import load_model_arg
from drivecompress.evaluate.measure import evaluate_predictor
from drivecompress.search.ship import ship_finalist


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("search_dir", type=Path)
    ap.add_argument("--trial", type=int, help="the finalist to ship (default: the one the search chose)")
    ap.add_argument("--to", type=Path, default=Path("searched"))
    ap.add_argument("--command", action="append", default=[], help="a command that ran the search (repeatable)")
    ap.add_argument("--notes", type=Path, help="Markdown file: the card's hand-written last section")
    ap.add_argument("--retrained", type=Path, help="a compress run that trained this finalist's network with "
                    "another recipe (e.g. longer): ship its model, recipe and figures instead")
    ap.add_argument("--data")
    a = ap.parse_args()
    try:
        notes = a.notes.read_text() if a.notes else None
        dest = ship_finalist(a.search_dir, a.to, a.trial, a.command, notes, a.retrained)
    except (BadInputError, OSError) as exc:
        print(f"ship_searched: {exc}", file=sys.stderr)
        return 2
    recorded = json.loads((dest / "search.json").read_text())["shipped"]["accuracy"]
    got = evaluate_predictor(load_model_arg(dest / "model.onnx").predictor(), Data.from_npz(a.data).test)["accuracy"]
    print(f"{dest}: int8 model.onnx {100 * got:.2f}% on the test set (the run recorded {100 * recorded:.2f}%)")
    if abs(got - recorded) > 1e-9:
        shutil.rmtree(dest)
        print("ship_searched: the shipped model does not reproduce its recorded accuracy; removed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

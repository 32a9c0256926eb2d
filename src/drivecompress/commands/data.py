"""``drivecompress data import-gtsrb DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from drivecompress.commands.base import command


@command("data", "Data utilities. 'data import-gtsrb DIR --out FILE' converts the official GTSRB archive "
         "(per-class .ppm folders with GT-*.csv ROI annotations, plus the test folder and its CSV) into the "
         "project's npz: crop to ROI, shrink to fit 32x32, paste top-left.")
def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["import-gtsrb"], help="what to do")
    p.add_argument("source", type=Path, metavar="DIR", help="root of the extracted official archive(s)")
    p.add_argument("--out", type=Path, default=Path("data/gtsrb32.npz"), help="npz to write (default data/gtsrb32.npz)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a table")
    p._no_common = True  # type: ignore[attr-defined]  # --data/--device do not apply to an import


@_args.bind
def _run(a: argparse.Namespace) -> dict[str, Any]:
    from drivecompress.data.gtsrb import load_gtsrb
    from drivecompress.data.importer import import_gtsrb

    counts = import_gtsrb(a.source, a.out, overwrite=a.overwrite)
    load_gtsrb(a.out)  # validate what we wrote against the same contract every command checks
    return {"out": str(a.out), **counts}

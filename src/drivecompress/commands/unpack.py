"""``drivecompress unpack FILE.dcz --out DIR``: decode a Deep Compression archive into a checkpoint folder
and its deploy ONNX."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from drivecompress.commands.base import command


@command("unpack", "Decode a .dcz archive (pruned, weight-shared, Huffman-coded; written by the 'share' step) "
         "into DIR: model.safetensors + model.json (a checkpoint any command takes as MODEL) and model.onnx, the "
         "fp32 deploy graph, parity-checked against PyTorch on test images (quantize it with the int8-ptq recipe "
         "for speed). Checksum, format version and every offset are checked first; nothing is unpickled.")
def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("archive", metavar="FILE.dcz", type=Path, help="the archive")
    p.add_argument("--out", required=True, type=Path, help="folder to create (must not hold anything yet)")


@_args.bind
def _run(a: argparse.Namespace) -> dict[str, Any]:
    from drivecompress.api import unpack

    return unpack(a.archive, a.out, data=a.data)

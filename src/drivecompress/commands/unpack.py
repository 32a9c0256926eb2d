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


@command("pack", "Write the .dcz archive of a weight-shared checkpoint (e.g. a share step's steps/NN-share/model): "
         "codes and relative indices Huffman-coded, BatchNorm folded, checksummed. Refuses a model whose layers are "
         "not weight-shared.")
def _pack_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="checkpoint folder holding a weight-shared model")
    p.add_argument("--out", required=True, type=Path, help="archive to write (must not exist)")
    p.add_argument("--conv-bits", type=int, default=4, help="code bits the convolutions were shared with (default 4)")
    p.add_argument("--linear-bits", type=int, default=5, help="code bits of linear layers (default 5)")
    p.add_argument("--index-bits", type=int, default=8, help="bits of a relative index (default 8)")


@_pack_args.bind
def _pack(a: argparse.Namespace) -> dict[str, Any]:
    from drivecompress.api import as_model
    from drivecompress.commands.base import config_from_flags
    from drivecompress.errors import BadInputError
    from drivecompress.share.dcz import read_dcz, size_table, write_dcz
    from drivecompress.share.kmeans import ShareConfig

    if a.out.exists():
        raise BadInputError(f"{a.out}: already exists; choose another --out")
    cfg = config_from_flags(ShareConfig, a, ("conv_bits", "linear_bits", "index_bits"))
    model = as_model(a.model)
    if model.module is None:
        raise BadInputError(f"{a.model}: an .onnx file has no shared layers to pack; give a checkpoint folder")
    meta = {k: v for k, v in (model.meta or {}).items() if k == "class_names"}
    try:
        write_dcz(a.out, model.module, cfg, meta, tuple(model.meta.get("input_shape", ())) or None)
    except ValueError as exc:
        raise BadInputError(f"{a.model}: {exc}") from exc
    decoded = read_dcz(a.out)
    table = size_table(a.out, decoded.layers)
    return {"archive": str(a.out), "archive_bytes": table["archive_bytes"], "decode_seconds": round(decoded.seconds, 3),
            "weights_fp32_bytes": table["total"]["fp32_bytes"], "weights_in_archive": table["total"]["huffman_bytes"]}

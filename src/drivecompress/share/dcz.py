"""The ``.dcz`` archive: a pruned, weight-shared model stored as Deep Compression stores it (Han et al. 2016,
sections 2-4), for over-the-air updates where every byte is paid per car.

Per shared layer: the codebook (float32), then for each stored weight its relative index (the number of zeros
skipped since the previous stored weight, at most 2^index_bits - 1; a longer run stores a *filler zero*, the
paper's rule) and its cluster code. Codes and relative indices are Huffman-coded per layer (``dahuffman`` builds
the code, stored as canonical code lengths): a 30%-dense early layer and a 4%-dense wide one have different gap
and code distributions, and one table for the whole model (format version 1, still read) cost 6 KB more than the
per-layer entropies on the shipped 92%-sparse model. Every other tensor (biases; BatchNorm folded to its
inference-time scale and shift) is stored as float16 (float32 where float16 would overflow) and deflated. The
checkpoint document (the zoo spec or a user network's layout) rides along, so decoding rebuilds the model exactly
as ``load_model`` does — no code is stored, nothing unpickled.

Layout: ``b"DCZ\\0"`` | u16 format version | u32 header length | zlib(JSON header) | payload | sha256 of all
bytes before it.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from dahuffman import HuffmanCodec
from dahuffman.huffmancodec import PrefixCodec

from drivecompress.errors import BadInputError
from drivecompress.share.kmeans import ShareConfig, layer_bits, shared_layers
from drivecompress.train.checkpoint import Template, checkpoint_document, model_from
from drivecompress.utils.io import atomic_write

MAGIC = b"DCZ\0"
FORMAT_VERSION = 2
READS = (1, 2)  # version 1: one Huffman table per stream for the whole model, stored as (symbol, bits, value)
FILLER = -2  # code symbol of a filler zero
EOF = -1  # end-of-stream symbol of both Huffman tables
_HEAD = struct.Struct("<4sHI")
_CODE_OFFSET = 2  # code lengths are listed from FILLER (-2) on
_INDEX_OFFSET = 1  # index lengths from EOF (-1) on


@dataclass(frozen=True)
class Decoded:
    """A decoded archive: the rebuilt model, its checkpoint document, per-layer records and decode time."""

    model: nn.Module
    doc: dict[str, Any]
    layers: list[dict[str, Any]]
    seconds: float


def _relative(flat: np.ndarray, codes: np.ndarray, index_bits: int) -> tuple[list[int], list[int]]:
    """(relative indices, codes) of the non-zero positions of ``flat``, with filler zeros inserted where a run
    of zeros is longer than an index can say."""
    max_rel = 2 ** index_bits - 1
    rel_out: list[int] = []
    code_out: list[int] = []
    prev = -1
    for pos, code in zip(np.flatnonzero(flat).tolist(), codes.tolist(), strict=True):
        rel = pos - prev - 1
        while rel > max_rel:
            rel_out.append(max_rel)
            code_out.append(FILLER)
            prev += max_rel + 1
            rel = pos - prev - 1
        rel_out.append(rel)
        code_out.append(code)
        prev = pos
    return rel_out, code_out


def _codebook(name: str, weight: torch.Tensor, bits: int) -> tuple[np.ndarray, np.ndarray]:
    flat = weight.detach().cpu().float().flatten().numpy()
    values = flat[flat != 0]
    book = np.unique(values)
    if len(book) > 2 ** bits:
        raise ValueError(f"layer '{name}' is not weight-shared: {len(book)} distinct non-zero values for {bits} "
                         f"bits (run the share step first)")
    return book, np.searchsorted(book, values)


def _lengths(symbols: list[int], offset: int) -> list[int]:
    """Huffman code lengths of ``symbols`` (plus EOF) as a list indexed by ``symbol + offset`` (0 = absent)."""
    table = HuffmanCodec.from_frequencies(Counter(symbols) or {0: 1}, eof=EOF).get_code_table()
    out = [0] * (max(table) + offset + 1)
    for sym, (bits, _) in table.items():
        out[sym + offset] = bits
    return out


def _canonical(lengths: Any, offset: int, what: str, where: Path) -> PrefixCodec:
    """The canonical prefix code of a list of code lengths (symbols in order of length, then symbol): the
    lengths alone define it, so the archive stores one small integer per symbol instead of the codes."""
    try:
        pairs = sorted((int(b), i - offset) for i, b in enumerate(lengths) if int(b) != 0)
        if not pairs or not all(1 <= b <= 64 for b, _ in pairs) or EOF not in {s for _, s in pairs} \
                or sum(2.0 ** -b for b, _ in pairs) > 1.0 + 1e-12:
            raise ValueError
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"{where}: the {what} Huffman code lengths are malformed") from exc
    table, code, prev = {}, 0, pairs[0][0]
    for bits, sym in pairs:
        code <<= bits - prev
        table[sym] = (bits, code)
        code, prev = code + 1, bits
    return PrefixCodec(table, concat=list, check=False, eof=EOF)


def _codec(rows: Any, what: str, where: Path) -> PrefixCodec:
    try:
        table = {int(s): (int(b), int(v)) for s, b, v in rows}
        if not all(1 <= b <= 64 and 0 <= v < 2 ** b for b, v in table.values()) or EOF not in table:
            raise ValueError
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"{where}: the {what} Huffman table is malformed") from exc
    return PrefixCodec(table, concat=list, check=False, eof=EOF)


def _fold_batchnorm(model: nn.Module, state: dict[str, torch.Tensor]) -> list[list[Any]]:
    """Store each BatchNorm as its inference-time affine map: scale = w / sqrt(var + eps), shift = b - scale *
    mean, held in ``weight``/``bias`` with the running statistics dropped (two vectors instead of four; the
    decoder sets mean 0 and var 1 - eps, which computes the same outputs in eval mode)."""
    folded = []
    for name, m in model.named_modules():
        if not (isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and m.track_running_stats
                and m.running_mean is not None):
            continue
        p = f"{name}." if name else ""
        scale = state[p + "weight"].double() / torch.sqrt(state[p + "running_var"].double() + m.eps)
        state[p + "bias"] = (state[p + "bias"].double() - scale * state[p + "running_mean"].double()).float()
        state[p + "weight"] = scale.float()
        for k in ("running_mean", "running_var", "num_batches_tracked"):
            state.pop(p + k, None)
        folded.append([p, float(m.eps), list(m.running_mean.shape)])
    return folded


def _unfold_batchnorm(folded: Any, state: dict[str, torch.Tensor], where: Path) -> None:
    try:
        for prefix, eps, shape in folded:
            state[prefix + "running_mean"] = torch.zeros(shape)
            state[prefix + "running_var"] = torch.full(shape, 1.0 - float(eps))
            state[prefix + "num_batches_tracked"] = torch.tensor(0)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"{where}: malformed BatchNorm record ({exc})") from exc


def encode(model: nn.Module, cfg: ShareConfig, meta: dict[str, Any] | None = None,
           input_shape: tuple[int, ...] | None = None) -> bytes:
    """The archive bytes of a weight-shared ``model`` (every conv/linear weight holds at most 2^bits values)."""
    state, doc = checkpoint_document(model, meta, input_shape)
    layers, streams = [], []
    for name, m in shared_layers(model):
        bits = layer_bits(name, m, cfg)
        book, codes = _codebook(name, m.weight, bits)
        rel, code = _relative(m.weight.detach().cpu().flatten().numpy(), codes, cfg.index_bits)
        layers.append({"name": f"{name}.weight" if name else "weight", "shape": list(m.weight.shape), "bits": bits,
                       "index_bits": cfg.index_bits, "clusters": len(book), "nonzero": len(codes),
                       "entries": len(code)})
        streams.append((rel, code, book.astype("<f4").tobytes()))
    payload = bytearray()
    for layer, (rel, code, book) in zip(layers, streams, strict=True):
        layer["codebook"] = [len(payload), len(book)]
        payload += book
        layer["huffman"] = {"codes": _lengths(code, _CODE_OFFSET), "index": _lengths(rel, _INDEX_OFFSET)}
        for key, offset, symbols in (("codes", _CODE_OFFSET, code), ("index", _INDEX_OFFSET, rel)):
            blob = _canonical(layer["huffman"][key], offset, key, Path("<encoder>")).encode(symbols)
            layer[key] = [len(payload), len(blob)]
            payload += blob
    shared = {layer["name"] for layer in layers}
    folded = _fold_batchnorm(model, state)
    raw, raw_meta = bytearray(), []
    for key, t in state.items():
        if key in shared:
            continue
        arr = t.numpy()
        if arr.dtype.kind == "f":
            half = arr.astype(np.float16)
            arr = half if np.isfinite(half).all() == np.isfinite(arr).all() else arr.astype(np.float32)
        raw_meta.append({"name": key, "shape": list(arr.shape), "dtype": arr.dtype.name, "offset": len(raw),
                         "length": arr.nbytes})
        raw += arr.tobytes()
    raw_blob = zlib.compress(bytes(raw), 9)
    header = {"format_version": FORMAT_VERSION, "checkpoint": doc, "layers": layers, "raw": raw_meta,
              "batchnorm_folded": folded,
              "raw_blob": [len(payload), len(raw_blob)]}
    payload += raw_blob
    head = zlib.compress(json.dumps(header, separators=(",", ":")).encode(), 9)
    body = _HEAD.pack(MAGIC, FORMAT_VERSION, len(head)) + head + bytes(payload)
    return body + hashlib.sha256(body).digest()


def write_dcz(path: str | Path, model: nn.Module, cfg: ShareConfig | None = None,
              meta: dict[str, Any] | None = None, input_shape: tuple[int, ...] | None = None) -> Path:
    """Write the ``.dcz`` archive of a weight-shared model atomically."""
    path = Path(path)
    blob = encode(model, cfg or ShareConfig(), meta, input_shape)
    atomic_write(path, lambda p: p.write_bytes(blob))
    return path


def _parse(blob: bytes, where: Path) -> tuple[dict[str, Any], memoryview]:
    if len(blob) < _HEAD.size + 32:
        raise BadInputError(f"{where}: truncated ({len(blob)} bytes): not a complete .dcz archive")
    magic, version, head_len = _HEAD.unpack_from(blob)
    if magic != MAGIC:
        raise BadInputError(f"{where}: not a .dcz archive (bad magic bytes)")
    if version not in READS:
        raise BadInputError(f"{where}: .dcz format version {version}; this drivecompress reads versions "
                            f"{', '.join(map(str, READS))}")
    if hashlib.sha256(blob[:-32]).digest() != blob[-32:]:
        raise BadInputError(f"{where}: checksum mismatch: the archive is truncated or corrupted")
    try:
        header = json.loads(zlib.decompress(blob[_HEAD.size:_HEAD.size + head_len]))
        needed = {"checkpoint", "layers", "raw", "raw_blob"} | ({"huffman"} if version == 1 else set())
        if not isinstance(header, dict) or not needed <= set(header):
            raise ValueError("keys missing")
        header["format_version"] = version
    except (zlib.error, ValueError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{where}: unreadable archive header ({exc})") from exc
    return header, memoryview(blob)[_HEAD.size + head_len:-32]


def _slice(payload: memoryview, span: Any, what: str, where: Path) -> bytes:
    try:
        start, length = int(span[0]), int(span[1])
    except (TypeError, ValueError, IndexError) as exc:
        raise BadInputError(f"{where}: {what}: bad offsets") from exc
    if start < 0 or length < 0 or start + length > len(payload):
        raise BadInputError(f"{where}: {what}: offsets point outside the archive")
    return bytes(payload[start:start + length])


def _layer_codecs(layer: dict[str, Any], where: Path) -> dict[str, PrefixCodec]:
    name = layer.get("name", "?")
    tables = layer.get("huffman")
    if not isinstance(tables, dict):
        raise BadInputError(f"{where}: layer '{name}': Huffman code lengths missing")
    return {k: _canonical(tables.get(k), off, f"layer '{name}' {k}", where)
            for k, off in (("codes", _CODE_OFFSET), ("index", _INDEX_OFFSET))}


def _decode_layer(layer: dict[str, Any], payload: memoryview, codecs: dict[str, PrefixCodec] | None,
                  where: Path) -> torch.Tensor:
    """One layer's dense weight; ``codecs`` are version 1's model-wide tables (None: the layer's own)."""
    name = layer.get("name", "?")
    codecs = codecs or _layer_codecs(layer, where)
    try:
        shape, entries = [int(s) for s in layer["shape"]], int(layer["entries"])
        max_rel = 2 ** int(layer["index_bits"]) - 1
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"{where}: layer '{name}': malformed record ({exc})") from exc
    raw_book = _slice(payload, layer.get("codebook"), f"layer '{name}' codebook", where)
    if len(raw_book) % 4:
        raise BadInputError(f"{where}: layer '{name}': codebook is not a float32 array")
    book = np.frombuffer(raw_book, dtype="<f4")
    codes = codecs["codes"].decode(_slice(payload, layer.get("codes"), f"layer '{name}' codes", where))
    rel = codecs["index"].decode(_slice(payload, layer.get("index"), f"layer '{name}' indices", where))
    if len(codes) != entries or len(rel) != entries:
        raise BadInputError(f"{where}: layer '{name}': {len(codes)} codes / {len(rel)} indices decoded, "
                            f"{entries} expected")
    rel_a, code_a = np.asarray(rel, dtype=np.int64), np.asarray(codes, dtype=np.int64)
    if len(rel_a) and (rel_a.min() < 0 or rel_a.max() > max_rel):
        raise BadInputError(f"{where}: layer '{name}': relative index out of range")
    pos = np.cumsum(rel_a + 1) - 1
    numel = int(np.prod(shape))
    if len(pos) and pos[-1] >= numel:
        raise BadInputError(f"{where}: layer '{name}': indices run past the layer's {numel} weights")
    keep = code_a != FILLER
    if keep.any() and (code_a[keep].min() < 0 or code_a[keep].max() >= len(book)):
        raise BadInputError(f"{where}: layer '{name}': cluster code outside its {len(book)}-entry codebook")
    flat = np.zeros(numel, dtype=np.float32)
    flat[pos[keep]] = book[code_a[keep]]
    return torch.from_numpy(flat.reshape(shape))


def _decode_raw(header: dict[str, Any], payload: memoryview, where: Path) -> dict[str, torch.Tensor]:
    try:
        raw = zlib.decompress(_slice(payload, header["raw_blob"], "raw tensors", where))
    except zlib.error as exc:
        raise BadInputError(f"{where}: raw tensors: {exc}") from exc
    out = {}
    for rec in header["raw"]:
        try:
            dtype = np.dtype(rec["dtype"])
            if dtype.kind not in "fiub":
                raise ValueError(f"dtype {dtype}")
            arr = np.frombuffer(raw, dtype=dtype, count=int(np.prod(rec["shape"], dtype=np.int64)),
                                offset=int(rec["offset"])).reshape(rec["shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInputError(f"{where}: raw tensor '{rec.get('name', '?')}': {exc}") from exc
        out[rec["name"]] = torch.from_numpy(arr.astype(np.float32) if dtype.kind == "f" else arr.copy())
    return out


def _decode(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any], float]:
    """(weights, checkpoint document, header, seconds): the file is read and parsed once."""
    if not path.is_file():
        raise BadInputError(f"{path}: archive not found")
    t0 = time.perf_counter()
    header, payload = _parse(path.read_bytes(), path)
    codecs = ({k: _codec(header["huffman"].get(k), k, path) for k in ("codes", "index")}
              if header["format_version"] == 1 else None)
    state = _decode_raw(header, payload, path)
    _unfold_batchnorm(header.get("batchnorm_folded", []), state, path)
    for layer in header["layers"]:
        state[layer["name"]] = _decode_layer(layer, payload, codecs, path)
    doc = header["checkpoint"]
    if not isinstance(doc, dict) or not (isinstance(doc.get("spec"), dict) or doc.get("kind") == "layout"):
        raise BadInputError(f"{path}: the archive's model description is malformed")
    return state, doc, header, time.perf_counter() - t0


def decode_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], float]:
    """(weights, checkpoint document, seconds) from an archive file; checksum, version and every offset are
    checked first."""
    state, doc, _, seconds = _decode(path)
    return state, doc, seconds


def read_dcz(path: str | Path, template: Template | None = None) -> Decoded:
    """Decode a ``.dcz`` file into the model; a user-defined network needs ``template`` (its module or
    constructor)."""
    path = Path(path)
    t0 = time.perf_counter()
    state, doc, header, _ = _decode(path)
    model = model_from(doc, state, path, template)
    return Decoded(model=model, doc=doc, layers=header["layers"], seconds=time.perf_counter() - t0)


def size_table(path: Path, layers: list[dict[str, Any]], fp32_onnx: Path | None = None) -> dict[str, Any]:
    """Deep Compression's size table, per layer and in total: fp32 -> pruned (value + relative index) ->
    shared (code + relative index, codebook) -> Huffman-coded (the bytes in the archive)."""
    rows, tot = [], Counter()
    for layer in layers:
        params = int(np.prod(layer["shape"]))
        idx, entries, nnz = layer["index_bits"], layer["entries"], layer["nonzero"]
        row = {"layer": layer["name"], "params": params, "nonzero": nnz, "bits": layer["bits"],
               "fp32_bytes": 4 * params, "pruned_bytes": round(nnz * (32 + idx) / 8),
               "shared_bytes": round(entries * (layer["bits"] + idx) / 8) + layer["codebook"][1],
               "huffman_bytes": layer["codes"][1] + layer["index"][1] + layer["codebook"][1]}
        rows.append(row)
        tot.update({k: v for k, v in row.items() if k not in ("layer", "bits")})
    archive = path.stat().st_size
    out: dict[str, Any] = {"layers": rows, "total": dict(tot), "archive_bytes": archive,
                           "weight_reduction": round(tot["fp32_bytes"] / max(1, tot["huffman_bytes"]), 2)}
    if fp32_onnx is not None and Path(fp32_onnx).exists():
        out["fp32_onnx_bytes"] = Path(fp32_onnx).stat().st_size
        out["reduction_vs_fp32_onnx"] = round(out["fp32_onnx_bytes"] / archive, 2)
    return out

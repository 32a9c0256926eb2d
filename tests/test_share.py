"""Deep Compression: k-means weight sharing with trained centroids, the Huffman-coded .dcz archive (filler
zeros, checksum, version), its decoder and ``drivecompress unpack``, on the zoo and on a user's network."""

import copy
import hashlib
import struct

import numpy as np
import pytest
import torch
import torch.nn as nn

import drivecompress as dc
from drivecompress.cli import main
from drivecompress.data.transforms import deploy_input
from drivecompress.prune.unstructured import UnstructuredConfig, apply_sparsity, make_permanent
from drivecompress.share.dcz import _relative, decode_state, encode, read_dcz, size_table, write_dcz
from drivecompress.share.kmeans import apply_sharing, bake, kmeans_1d, shared_layers

from .conftest import tiny_model
from .nets import make_net


def _sparse_shared(model: nn.Module, sparsity: float = 0.7, cfg: dc.ShareConfig | None = None) -> nn.Module:
    model = copy.deepcopy(model)
    apply_sparsity(model, sparsity, UnstructuredConfig(sparsity=sparsity, include_linear=True))
    make_permanent(model)
    apply_sharing(model, cfg or dc.ShareConfig())
    return bake(model).eval()


def _logits(model: nn.Module, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.as_tensor(x))


def test_kmeans_1d_finds_separated_clusters():
    rng = np.random.default_rng(0)
    values = torch.as_tensor(np.concatenate([rng.normal(c, 0.01, 500) for c in (-1.0, 0.2, 3.0)]), dtype=torch.float32)
    for init in ("linear", "density", "random"):
        centroids, codes = kmeans_1d(values, 3, init, iterations=50)
        assert torch.allclose(centroids, torch.tensor([-1.0, 0.2, 3.0]), atol=0.01), init
        assert codes.tolist() == [0] * 500 + [1] * 500 + [2] * 500


def test_sharing_leaves_few_values_per_layer_and_keeps_the_zeros():
    model = _sparse_shared(tiny_model("resnet"), 0.6, dc.ShareConfig(conv_bits=3, linear_bits=2))
    for name, m in shared_layers(model):
        w = m.weight.detach()
        assert len(torch.unique(w[w != 0])) <= (4 if isinstance(m, nn.Linear) else 8), name
    total = sum(m.weight.numel() for _, m in shared_layers(model))
    zeros = sum(int((m.weight == 0).sum()) for _, m in shared_layers(model))
    assert zeros >= 0.6 * total  # pruned weights are not a cluster and stay zero


def test_centroid_finetuning_trains_only_the_codebooks(mini_data):
    model = _sparse_shared(tiny_model("vgg"), 0.5)
    before = {n: m.weight.detach().clone() for n, m in shared_layers(model)}
    notes = dc.share(model, mini_data, dc.ShareConfig(epochs=1, train_subset=256, batch_size=64, distill=False,
                                                      lr=1e-2))
    changed = 0
    for n, m in shared_layers(model):
        w = m.weight.detach()
        assert torch.equal(w == 0, before[n] == 0), f"{n}: sparsity pattern changed"
        assert len(torch.unique(w[w != 0])) <= 2 ** (5 if isinstance(m, nn.Linear) else 4)
        changed += not torch.equal(w, before[n])
    assert changed > 0, "no centroid moved"
    assert {"val_accuracy_before", "val_accuracy_clustered", "val_accuracy_shared", "bits"} <= set(notes)


def test_relative_indices_insert_filler_zeros_for_long_gaps():
    flat = np.zeros(40, dtype=np.float32)
    flat[[2, 3, 30]] = [1.0, 2.0, 3.0]
    rel, codes = _relative(flat, np.array([0, 1, 2]), index_bits=3)  # at most 7 zeros per index
    assert rel == [2, 0, 7, 7, 7, 2]  # 26 zeros before position 30: three filler zeros, then 2 more zeros
    assert codes == [0, 1, -2, -2, -2, 2]


@pytest.mark.parametrize("index_bits", [2, 5])
def test_archive_round_trip_is_exact_for_weights(tmp_path, index_bits):
    model = _sparse_shared(tiny_model("resnet"), 0.8)
    cfg = dc.ShareConfig(index_bits=index_bits)
    path = write_dcz(tmp_path / "m.dcz", model, cfg, {"class_names": ["a"] * 43})
    decoded = read_dcz(path)
    for (name, a), (_, b) in zip(shared_layers(model), shared_layers(decoded.model), strict=True):
        assert torch.equal(a.weight, b.weight), name  # codes, indices and codebooks are lossless
    x = np.random.default_rng(0).random((8, 3, 32, 32), dtype=np.float32)
    assert (_logits(model, x) - _logits(decoded.model, x)).abs().max() < 5e-3  # BN folded and stored as float16
    table = size_table(path, decoded.layers)
    assert table["total"]["huffman_bytes"] < table["total"]["shared_bytes"] < table["total"]["pruned_bytes"]
    assert table["total"]["pruned_bytes"] < table["total"]["fp32_bytes"]
    assert path.stat().st_size == table["archive_bytes"]


def test_archive_of_a_user_network_needs_its_template(tmp_path, mini_data):
    net = _sparse_shared(make_net("se_group"), 0.7)
    path = write_dcz(tmp_path / "u.dcz", net, dc.ShareConfig(), None, mini_data.input_shape)
    with pytest.raises(dc.BadInputError, match="user-defined network"):
        read_dcz(path)
    decoded = read_dcz(path, template=make_net("se_group"))
    x = deploy_input(mini_data.test.x[:8])
    assert (_logits(net, x) - _logits(decoded.model, x)).abs().max() < 5e-3


def test_a_model_that_was_not_shared_is_refused():
    with pytest.raises(ValueError, match="not weight-shared"):
        encode(tiny_model("vgg"), dc.ShareConfig())


def _rewrite(blob: bytes, version: int | None = None, flip: int | None = None) -> bytes:
    body = bytearray(blob[:-32])
    if version is not None:
        struct.pack_into("<H", body, 4, version)
    if flip is not None:
        body[flip] ^= 0xFF
        return bytes(body) + blob[-32:]  # checksum left stale
    return bytes(body) + hashlib.sha256(body).digest()


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "checksum mismatch"),
    (lambda b: b[:20], "truncated"),
    (lambda b: b"PK\x03\x04" + b[4:], "not a .dcz archive"),
    (lambda b: _rewrite(b, version=9), "format version 9"),
    (lambda b: _rewrite(b, flip=len(b) - 100), "checksum mismatch"),
    (lambda b: b"\x80\x04\x95" + b"\0" * 64, "not a .dcz archive"),  # a pickle is never unpickled
])
def test_damaged_archives_exit_2_with_one_line(tmp_path, capsys, damage, message):
    good = write_dcz(tmp_path / "m.dcz", _sparse_shared(tiny_model("vgg")), dc.ShareConfig())
    bad = tmp_path / "bad.dcz"
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(dc.BadInputError, match=message):
        decode_state(bad)
    out = tmp_path / "out"
    assert main(["unpack", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def _with_header(blob: bytes, edit, version: int = 2) -> bytes:
    """The archive with its JSON header changed by ``edit`` (payload kept, checksum recomputed)."""
    import json
    import zlib

    _, _, head_len = struct.unpack_from("<4sHI", blob)
    header = json.loads(zlib.decompress(blob[10:10 + head_len]))
    payload = edit(header, blob[10 + head_len:-32])
    head = zlib.compress(json.dumps(header).encode())
    body = struct.pack("<4sHI", b"DCZ\0", version, len(head)) + head + payload
    return body + hashlib.sha256(body).digest()


def _as_version_1(header: dict, payload: bytes) -> bytes:
    """Re-code every layer with version 1's model-wide Huffman tables (stored as symbol, bits, value)."""
    from collections import Counter

    from dahuffman import HuffmanCodec

    from drivecompress.share.dcz import _CODE_OFFSET, _INDEX_OFFSET, EOF, _canonical

    streams = {}
    for layer in header["layers"]:
        for key, off in (("codes", _CODE_OFFSET), ("index", _INDEX_OFFSET)):
            start, length = layer[key]
            streams[layer["name"], key] = _canonical(layer["huffman"][key], off, key, None).decode(
                payload[start:start + length])
        del layer["huffman"]
    tables, out = {}, bytearray()
    for key in ("codes", "index"):
        tables[key] = HuffmanCodec.from_frequencies(
            Counter(s for (_, k), sym in streams.items() if k == key for s in sym), eof=EOF)
        header.setdefault("huffman", {})[key] = [[s, b, v] for s, (b, v) in
                                                 sorted(tables[key].get_code_table().items())]
    for layer in header["layers"]:
        start, length = layer["codebook"]
        layer["codebook"] = [len(out), length]
        out += payload[start:start + length]
        for key in ("codes", "index"):
            blob = tables[key].encode(streams[layer["name"], key])
            layer[key] = [len(out), len(blob)]
            out += blob
    start, length = header["raw_blob"]
    header["raw_blob"] = [len(out), length]
    return bytes(out + payload[start:start + length])


def test_version_1_archives_with_model_wide_tables_still_decode(tmp_path):
    model = _sparse_shared(tiny_model("resnet"), 0.8)
    v2 = write_dcz(tmp_path / "m.dcz", model, dc.ShareConfig())
    v1 = tmp_path / "v1.dcz"
    v1.write_bytes(_with_header(v2.read_bytes(), _as_version_1, version=1))
    assert v1.read_bytes()[4] == 1
    for (name, a), (_, b) in zip(shared_layers(read_dcz(v2).model), shared_layers(read_dcz(v1).model), strict=True):
        assert torch.equal(a.weight, b.weight), name


def test_malformed_code_lengths_exit_2(tmp_path, capsys):
    good = write_dcz(tmp_path / "m.dcz", _sparse_shared(tiny_model("vgg")), dc.ShareConfig())

    def kraft_over_one(header, payload):
        header["layers"][0]["huffman"]["codes"] = [1] * len(header["layers"][0]["huffman"]["codes"])
        return payload

    bad = tmp_path / "bad.dcz"
    bad.write_bytes(_with_header(good.read_bytes(), kraft_over_one))
    assert main(["unpack", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "Huffman code lengths are malformed" in err and len(err.splitlines()) == 1


def test_unpack_writes_a_checkpoint_and_a_parity_checked_onnx(tmp_path, capsys):
    model = _sparse_shared(tiny_model("resnet"), 0.8)
    path = write_dcz(tmp_path / "m.dcz", model, dc.ShareConfig(), {"class_names": [str(i) for i in range(43)]},
                     (3, 32, 32))
    out = tmp_path / "unpacked"
    assert main(["unpack", str(path), "--out", str(out), "--json"]) == 0
    doc = __import__("json").loads(capsys.readouterr().out)
    assert doc["onnx_max_abs_diff"] <= 1e-3 and (out / "model.onnx").exists()
    assert main(["eval", str(out), "--subset", "64", "--json"]) == 0  # the checkpoint is a MODEL like any other
    capsys.readouterr()
    before = sorted(p.name for p in out.iterdir())
    assert main(["unpack", str(path), "--out", str(out)]) == 2  # never overwrites
    assert "new or empty folder" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before


def test_share_step_in_a_recipe_continues_from_the_decoded_archive(tmp_path, mini_data):
    recipe = {"steps": [{"type": "unstructured", "sparsity": 0.6, "include_linear": True, "iterations": 1,
                         "recovery_epochs": 1, "train_subset": 256, "batch_size": 64},
                        {"type": "share", "epochs": 1, "train_subset": 256, "batch_size": 64}],
              "evaluation": {"test_subset": 200, "latency_runs": 10, "throughput_seconds": 0.2}}
    result = dc.compress(tiny_model("vgg"), recipe, data=mini_data, out=tmp_path / "run")
    step = result.report["steps"][1]
    archive = step["notes"]["archive"]
    assert (tmp_path / "run" / "steps" / "01-share" / "model.dcz").stat().st_size == archive["archive_bytes"]
    assert archive["reduction_vs_fp32_onnx"] > 5
    decoded = read_dcz(tmp_path / "run" / "steps" / "01-share" / "model.dcz")
    saved = dc.load_model(tmp_path / "run" / "steps" / "01-share" / "model")
    x = deploy_input(mini_data.test.x[:16])
    assert torch.allclose(_logits(decoded.model, x), _logits(saved, x), atol=1e-5)
    page = (tmp_path / "run" / "report.html").read_text()
    assert "huffman bytes" in page and "decoded from the archive" in page


def test_pack_cli_archives_a_shared_checkpoint_and_refuses_an_unshared_one(tmp_path, capsys):
    from drivecompress.train.checkpoint import save_checkpoint

    shared = save_checkpoint(tmp_path / "shared", _sparse_shared(tiny_model("vgg"), 0.8))
    assert main(["pack", str(shared), "--out", str(tmp_path / "m.dcz"), "--json"]) == 0
    doc = __import__("json").loads(capsys.readouterr().out)
    assert doc["archive_bytes"] == (tmp_path / "m.dcz").stat().st_size
    assert main(["pack", str(shared), "--out", str(tmp_path / "m.dcz")]) == 2  # never overwrites
    plain = save_checkpoint(tmp_path / "plain", tiny_model("vgg"))
    capsys.readouterr()
    assert main(["pack", str(plain), "--out", str(tmp_path / "p.dcz")]) == 2
    assert "not weight-shared" in capsys.readouterr().err and not (tmp_path / "p.dcz").exists()
    assert main(["pack", str(shared), "--out", str(tmp_path / "b.dcz"), "--conv-bits", "9"]) == 2
    assert capsys.readouterr().err.strip() == ("drivecompress: error: --conv-bits: must be less than or equal to 8 "
                                               "(got 9)") and not (tmp_path / "b.dcz").exists()

import json

import pytest
import torch

from drivecompress.errors import BadInputError
from drivecompress.models import available_models, build_model, default_spec, spec_of
from drivecompress.train.checkpoint import load_checkpoint, save_checkpoint

from .conftest import random_images, tiny_model


def test_three_families_registered():
    assert {"vgg", "resnet", "mobilenetv2"} <= set(available_models())


def test_forward_pass_shape(arch):
    model = tiny_model(arch)
    out = model(torch.as_tensor(random_images(5)))
    assert out.shape == (5, 43) and torch.isfinite(out).all()


def test_width_multiplier_scales_params(arch):
    small = sum(p.numel() for p in build_model(default_spec(arch, 0.5)).parameters())
    big = sum(p.numel() for p in build_model(default_spec(arch, 1.0)).parameters())
    assert big > 1.8 * small


def test_spec_round_trip_identical_outputs(arch, tmp_path):
    model = tiny_model(arch)
    spec = spec_of(model)
    json.dumps(spec)  # JSON-able
    save_checkpoint(tmp_path / "ckpt", model, {"metrics": {"val_accuracy": 0.5}, "class_names": ["a"] * 43})
    loaded, meta = load_checkpoint(tmp_path / "ckpt")
    x = torch.as_tensor(random_images(4))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert meta["spec"] == spec and meta["metrics"]["val_accuracy"] == 0.5 and len(meta["class_names"]) == 43


def _shrink(spec: dict) -> dict:
    """Alter widths the way pruning would (odd, non-uniform channel counts)."""
    spec = json.loads(json.dumps(spec))
    if spec["arch"] == "vgg":
        spec["features"] = [v if v == "M" else v - 3 for v in spec["features"]]
    elif spec["arch"] == "resnet":
        spec["stem"] -= 1
        for st in spec["stages"]:
            st["out"] -= 1
            st["mids"] = [m - 5 for m in st["mids"]]
    else:
        for b in spec["blocks"]:
            if b["expand"]:  # a non-expanding block's depthwise conv runs on its input: width fixed by it
                b["hidden"] -= 3
        spec["head"] -= 7
    return spec


def test_pruned_widths_rebuild_and_reload(arch, tmp_path):
    """A model with irregular widths (as after channel pruning) saves and reloads from its spec alone."""
    spec = _shrink(default_spec(arch, 0.25))
    model = build_model(spec).eval()
    assert spec_of(model)["arch"] == arch
    save_checkpoint(tmp_path / "p", model)
    loaded, meta = load_checkpoint(tmp_path / "p")
    x = torch.as_tensor(random_images(2))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    rebuilt = {k: v for k, v in meta["spec"].items() if k != "input_norm"}
    assert rebuilt == spec


def test_resnet_has_residual_and_mobilenet_depthwise():
    r = tiny_model("resnet")
    assert any(b.shortcut is None for b in r.blocks) and any(b.shortcut is not None for b in r.blocks)
    m = tiny_model("mobilenetv2")
    assert any(b.use_res for b in m.blocks)
    assert all(b.dw[0].groups == b.dw[0].in_channels for b in m.blocks)


def test_bad_specs():
    with pytest.raises(BadInputError, match="unknown arch 'nope'"):
        build_model({"arch": "nope"})
    with pytest.raises(BadInputError, match="malformed"):
        build_model({"arch": "resnet", "stem": 8})
    with pytest.raises(BadInputError, match="unknown model"):
        default_spec("nope")
    typo = default_spec("resnet")  # a misspelt key used to be ignored and the network built without it
    typo["stemx"] = typo.pop("stem")
    with pytest.raises(BadInputError, match="malformed"):
        build_model(typo)
    typo = {**default_spec("resnet"), "stemx": 16}
    typo["stages"][1]["strde"] = 1
    with pytest.raises(BadInputError, match=r"unknown key\(s\) stages\.1\.strde, stemx"):
        build_model(typo)


def test_checkpoint_errors(tmp_path):
    model = tiny_model("vgg")
    save_checkpoint(tmp_path / "c", model)
    (tmp_path / "c" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(BadInputError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "c")
    save_checkpoint(tmp_path / "d", model)
    meta = json.loads((tmp_path / "d" / "model.json").read_text())
    meta["spec"]["features"][0] = 16
    (tmp_path / "d" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(BadInputError, match="has shape"):
        load_checkpoint(tmp_path / "d")
    (tmp_path / "d" / "model.json").write_text("{not json")
    with pytest.raises(BadInputError, match="not valid JSON"):
        load_checkpoint(tmp_path / "d")
    with pytest.raises(BadInputError, match="not a checkpoint folder"):
        load_checkpoint(tmp_path / "missing")


def test_mobilenet_blocks_take_a_depthwise_kernel_size():
    """The search's kernel-size choice: a 5x5 depthwise block builds, round-trips through its spec, and an
    even kernel is refused as a malformed spec."""
    import pytest
    import torch

    from drivecompress.errors import BadInputError

    spec = {"arch": "mobilenetv2", "stem": 16, "head": 64, "num_classes": 5,
            "blocks": [{"hidden": 32, "out": 16, "stride": 2, "expand": True, "kernel": 5},
                       {"hidden": 48, "out": 32, "stride": 2, "expand": True}]}
    m = build_model(spec)
    assert m.blocks[0].dw[0].kernel_size == (5, 5) and m.blocks[1].dw[0].kernel_size == (3, 3)
    again = build_model(m.spec())
    assert [b["kernel"] for b in again.spec()["blocks"]] == [5, 3]
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(BadInputError, match="kernel"):
        build_model({**spec, "blocks": [{**spec["blocks"][0], "kernel": 4}]})


def test_build_model_with_a_seed_gives_the_same_weights_and_leaves_the_global_generator_alone():
    """``build_model(spec, seed=...)``: the search's proxy and latency reference build their networks this way."""
    spec = default_spec("resnet", 0.25)
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    a = build_model(spec, seed=3)
    assert torch.equal(torch.rand(1), expected_next)  # the caller's generator did not move
    torch.rand(7)
    b = build_model(spec, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))

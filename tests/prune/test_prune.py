import itertools
import math

import numpy as np
import pytest
import torch

from drivecompress.data.transforms import deploy_input
from drivecompress.evaluate.complexity import count_macs, zipped_size
from drivecompress.export.onnx import export_onnx
from drivecompress.models import build_model, default_spec, spec_of
from drivecompress.prune.structured import PruneConfig, channel_widths, make_pruner, prune_step, prune_structured
from drivecompress.prune.unstructured import (
    UnstructuredConfig,
    apply_sparsity,
    conv_sparsity,
    gradual_schedule,
    layer_sparsity,
    make_permanent,
)
from drivecompress.train.checkpoint import load_checkpoint, save_checkpoint

X = torch.rand(1, 3, 32, 32)
SHAPE = (3, 32, 32)


def _model(arch, width=0.5):
    torch.manual_seed(0)
    return build_model(default_spec(arch, width)).eval()


@pytest.mark.parametrize("arch", ["vgg", "resnet", "mobilenetv2"])
def test_structured_pruning_shrinks_reloads_and_exports(arch, tmp_path, test_subset):
    """Residual adds and depthwise groups are pruned coherently; the result reloads from spec and exports."""
    model = _model(arch)
    macs = count_macs(model, SHAPE)
    prune_structured(model, PruneConfig(ratio=0.5, round_to=8), X)
    assert count_macs(model, SHAPE) < 0.45 * macs  # channels halve on both sides of most convs
    x = torch.as_tensor(deploy_input(test_subset.x[:4]))
    with torch.no_grad():
        y = model(x)
    assert y.shape == (4, 43)
    save_checkpoint(tmp_path / "p", model)
    loaded, meta = load_checkpoint(tmp_path / "p")
    with torch.no_grad():  # same weights; a pruned depthwise conv may pick another kernel: float noise only
        assert torch.allclose(loaded(x), y, atol=1e-5)
    assert meta["spec"] == spec_of(model)
    res = export_onnx(loaded, tmp_path / "p.onnx", deploy_input(test_subset.x[:16]))
    assert res.max_abs_diff < 1e-4
    assert model.classifier.out_features == 43


def test_round_to_and_never_prune():
    model = _model("resnet")
    prune_structured(model, PruneConfig(ratio=0.4, round_to=8), X)
    assert all(w % 8 == 0 for w in channel_widths(model).values())
    m2 = _model("vgg")
    prune_structured(m2, PruneConfig(ratio=0.3, round_to=None, never_prune=["features.0"]), X)
    assert m2.features[0][0].out_channels == 16
    with pytest.raises(ValueError, match="no module named"):
        make_pruner(_model("vgg"), PruneConfig(never_prune=["nope"]), X)


@pytest.mark.parametrize("importance", ["l1", "l2", "taylor", "bn_scale"])
def test_importance_criteria_choose_different_channels(importance, splits):
    model = _model("vgg")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.1, 1.0)
    cfg = PruneConfig(ratio=0.5, importance=importance, round_to=None)
    prune_structured(model, cfg, X, splits.train.head(128))
    assert model.features[0][0].out_channels == 8


def test_importances_disagree_somewhere(splits):
    """L1 and BN-scale rank channels differently on a model whose BN scales are unrelated to weights."""
    kept = {}
    for imp in ("l1", "bn_scale"):
        model = _model("vgg")
        with torch.no_grad():
            bn = model.features[0][1]
            bn.weight.copy_(torch.linspace(1.0, 0.05, bn.weight.numel()))
        before = model.features[0][0].weight.detach().clone()
        prune_structured(model, PruneConfig(ratio=0.5, importance=imp, round_to=None), X, splits.train.head(64))
        after = model.features[0][0].weight.detach()
        kept[imp] = {int(i) for i in range(len(before)) if any(torch.equal(before[i], a) for a in after)}
    assert kept["bn_scale"] == set(range(8))  # the 8 largest BN scales are the first 8 channels
    assert kept["l1"] != kept["bn_scale"]


def test_iterative_pruner_reaches_target_in_steps():
    model = _model("resnet")
    cfg = PruneConfig(ratio=0.5, round_to=None)
    pruner = make_pruner(model, cfg, X, steps=2)
    macs = [count_macs(model, SHAPE)]
    for _ in range(2):
        prune_step(model, pruner, cfg)
        macs.append(count_macs(model, SHAPE))
    assert macs[0] > macs[1] > macs[2]


def test_unstructured_sparsity_is_real_and_permanent():
    model = _model("resnet")
    apply_sparsity(model, 0.8, UnstructuredConfig(sparsity=0.8))
    make_permanent(model)
    assert 0.8 <= conv_sparsity(model) < 0.801  # never below the target (counts round up)
    assert not any(hasattr(m, "weight_mask") for m in model.modules())
    per_layer = layer_sparsity(model)
    assert len(per_layer) > 5 and max(per_layer.values()) > 0.8 > min(per_layer.values())  # global: uneven
    model2 = _model("resnet")
    apply_sparsity(model2, 0.5, UnstructuredConfig(global_pruning=False))
    make_permanent(model2)
    assert all(0.5 <= v < 0.52 for k, v in layer_sparsity(model2, include_linear=False).items())


def test_gradual_schedule_and_zip_size():
    s = gradual_schedule(0.8, 4)
    assert s[-1] == pytest.approx(0.8) and all(a < b for a, b in itertools.pairwise(s))
    dense = np.random.default_rng(0).random(10000).astype(np.float32)
    sparse = dense.copy()
    sparse[:8000] = 0
    assert zipped_size(sparse.tobytes()) < 0.4 * zipped_size(dense.tobytes())


def test_sensitivity_curves_plan_and_plot(tmp_path, splits):
    from drivecompress.prune.sensitivity import measure_sensitivity, plot_sensitivity, ratios_for_mac_budget

    torch.manual_seed(0)
    model = build_model(default_spec("resnet", 0.5, depth=(1, 1, 1))).eval()
    cfg = PruneConfig(round_to=None)
    sens = measure_sensitivity(model, splits.val.head(64), cfg, X, ratios=(0.5, 0.9))
    assert len(sens.curves) >= 3 and all(len(c) == 2 for c in sens.curves.values())
    plan, macs = ratios_for_mac_budget(model, sens, cfg, X, 0.6)
    assert plan and macs <= 0.6 * count_macs(model, SHAPE)
    pruned = make_pruner(model, cfg, X, per_layer=plan)
    pruned.step()
    assert count_macs(model, SHAPE) == macs
    plot_sensitivity(sens, tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_capped_global_counts_respect_the_cap_and_the_total():
    from drivecompress.prune.unstructured import capped_counts

    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(100, generator=g), 0.01 * torch.randn(1000, generator=g), torch.randn(50, generator=g)]
    plain = capped_counts(weights, 0.9, 1.0)
    assert plain[1] == 1000  # one global |w| threshold empties the small-magnitude layer
    counts = capped_counts(weights, 0.9, 0.9)
    assert sum(counts) == math.ceil(0.9 * 1150)
    assert counts[1] == 900 and all(c <= 0.9 * w.numel() for c, w in zip(counts, weights, strict=True))

import numpy as np
import onnx
import pytest
import torch

from drivecompress.errors import BadInputError
from drivecompress.evaluate.predictor import OnnxPredictor, TorchPredictor, predict_all
from drivecompress.export.onnx import export_onnx

from .conftest import random_images, tiny_model


def test_export_contract_and_parity(arch, tmp_path, test_subset):
    """Every family (plain, residual, depthwise) exports to the deploy contract with matching logits."""
    model = tiny_model(arch)
    images = test_subset.x[:32].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    res = export_onnx(model, tmp_path / "m.onnx", images)
    assert res.max_abs_diff < 1e-4 and res.parity_images == 32
    graph = onnx.load(str(res.path)).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["logits"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    # dynamic batch: a batch size never seen at export time runs
    out = OnnxPredictor(res.path)(random_images(7))
    assert out.shape == (7, 43)


def test_torch_and_onnx_predictors_agree(tmp_path, test_subset):
    model = tiny_model("resnet")
    images = test_subset.x[:16].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    export_onnx(model, tmp_path / "r.onnx", images)
    a = predict_all(TorchPredictor(model), test_subset.x[:100], batch_size=33)
    b = predict_all(OnnxPredictor(tmp_path / "r.onnx", threads=1), test_subset.x[:100], batch_size=33)
    assert a.shape == (100, 43) and np.abs(a - b).max() < 1e-4


def test_parity_failure_is_reported(tmp_path, monkeypatch, test_subset):
    model = tiny_model("vgg")
    images = test_subset.x[:4].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    import drivecompress.export.onnx as ex

    monkeypatch.setattr(ex, "parity", lambda *a, **k: 0.5)
    with pytest.raises(RuntimeError, match="parity check failed"):
        ex.export_onnx(model, tmp_path / "v.onnx", images)


def test_corrupt_or_missing_onnx(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        OnnxPredictor(tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not an onnx model")
    with pytest.raises(BadInputError, match="not a loadable ONNX model"):
        OnnxPredictor(bad)


def test_torch_predictor_uses_eval_mode():
    model = tiny_model("resnet").train()
    pred = TorchPredictor(model)
    x = random_images(3)
    assert np.array_equal(pred(x), pred(x)) and not model.training
    assert isinstance(pred(x), np.ndarray) and pred(x).dtype == np.float32
    assert torch.is_grad_enabled()

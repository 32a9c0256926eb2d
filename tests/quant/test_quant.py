"""PTQ, sensitivity and QAT on tiny models: int8 storage, options that change what they should, errors."""

import logging

import numpy as np
import onnx
import pytest
import torch

from drivecompress.errors import BadInputError
from drivecompress.evaluate.predictor import OnnxPredictor, TorchPredictor, predict_all
from drivecompress.export.onnx import export_onnx
from drivecompress.quant.calibration import check_calibration_images
from drivecompress.quant.ptq import PTQConfig, int8_weight_count, quantize_ptq
from drivecompress.quant.qat import calibrate_ranges, export_qat, prepare_qat, qat_finetune
from drivecompress.quant.sensitivity import layer_sensitivity
from drivecompress.train.loop import TrainConfig

from ..conftest import tiny_model


def _imgs(data, n):
    return data.x[:n].transpose(0, 3, 1, 2).astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory, test_subset):
    path = tmp_path_factory.mktemp("q") / "fp32.onnx"
    export_onnx(tiny_model("resnet"), path, _imgs(test_subset, 16))
    return path


@pytest.fixture(scope="module")
def calib(splits):
    return _imgs(splits.train.head(128, seed=0), 128)


def _dq_scales(path) -> dict[str, float]:
    """Activation scales of the QDQ graph, keyed by the quantized tensor's name."""
    m = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in m.graph.node
            if n.op_type == "QuantizeLinear" and n.input[1] in inits and inits[n.input[1]].ndim == 0}


def requantized_adds(path) -> tuple[int, int]:
    """(Add nodes, how many of them have their output re-quantized) in a QDQ graph."""
    g = onnx.load(str(path)).graph
    consumers = {i: n.op_type for n in g.node for i in n.input}
    adds = [n for n in g.node if n.op_type == "Add"]
    return len(adds), sum(consumers.get(n.output[0]) == "QuantizeLinear" for n in adds)


def test_ptq_graph_holds_int8_weights_and_runs(fp32_onnx, calib, tmp_path, test_subset):
    res = quantize_ptq(fp32_onnx, tmp_path / "int8.onnx", calib, PTQConfig(calibration_images=64))
    kinds = int8_weight_count(res.path)
    assert kinds["int8"] >= 8 and kinds["int8_elements"] > 10 * kinds["float_elements"]
    ops = {n.op_type for n in onnx.load(str(res.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    a = predict_all(OnnxPredictor(fp32_onnx), test_subset.x[:64])
    b = predict_all(OnnxPredictor(res.path), test_subset.x[:64])
    assert b.shape == (64, 43) and np.abs(a - b).max() > 0  # really quantized, not a copy
    assert (a.argmax(1) == b.argmax(1)).mean() > 0.8
    assert res.path.stat().st_size < 0.5 * fp32_onnx.stat().st_size


def test_quantizer_chatter_is_quieted_without_changing_the_callers_logging(fp32_onnx, calib, tmp_path, caplog):
    # ORT's quantization tools log at INFO (per node, per pre-processing pass); a user running at INFO keeps
    # their level afterwards.
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.INFO)
    try:
        with caplog.at_level(logging.INFO):
            quantize_ptq(fp32_onnx, tmp_path / "q.onnx", calib, PTQConfig(calibration_images=16))
            assert root.level == logging.INFO
        assert not [r for r in caplog.records if r.levelno == logging.INFO and r.name.startswith("onnxruntime")]
    finally:
        root.setLevel(before)


def test_histogram_calibrator_prints_nothing_and_logs_at_debug(fp32_onnx, calib, tmp_path, capfd, caplog):
    """ORT's histogram calibrators print two lines per call on stdout (a hundred lines in a search's log): kept at
    DEBUG, neither on stdout (--json) nor on stderr."""
    with caplog.at_level(logging.DEBUG, logger="drivecompress.quant.ptq"):
        quantize_ptq(fp32_onnx, tmp_path / "q.onnx", calib, PTQConfig(calibration="percentile", calibration_images=16))
    out, err = capfd.readouterr()
    assert "histogram bins" not in out + err
    assert any("Number of histogram bins" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)


def test_calibration_method_changes_activation_ranges(fp32_onnx, calib, tmp_path):
    mm = quantize_ptq(fp32_onnx, tmp_path / "mm.onnx", calib, PTQConfig(calibration="minmax", calibration_images=64))
    pc = quantize_ptq(fp32_onnx, tmp_path / "pc.onnx", calib,
                      PTQConfig(calibration="percentile", percentile=99.0, calibration_images=64))
    s_mm, s_pc = _dq_scales(mm.path), _dq_scales(pc.path)
    common = set(s_mm) & set(s_pc)
    assert len(common) >= 5
    # percentile clips outliers: ranges never wider than min-max, and narrower for most tensors
    assert all(s_pc[k] <= s_mm[k] * 1.0001 for k in common)
    assert sum(s_pc[k] < s_mm[k] * 0.99 for k in common) >= len(common) // 2


def test_exclusion_keeps_matching_layers_float(fp32_onnx, calib, tmp_path):
    res = quantize_ptq(fp32_onnx, tmp_path / "ex.onnx", calib, PTQConfig(calibration_images=32, exclude=("*Gemm*",)))
    assert res.excluded_nodes and all("Gemm" in n for n in res.excluded_nodes)
    g = onnx.load(str(res.path)).graph
    gemm = next(n for n in g.node if n.op_type == "Gemm")
    producers = {o: n.op_type for n in g.node for o in n.output}
    assert gemm.input[1] not in producers or producers[gemm.input[1]] != "DequantizeLinear"
    full = quantize_ptq(fp32_onnx, tmp_path / "full.onnx", calib, PTQConfig(calibration_images=32))
    # the classifier's 43 x C weight matrix is int8 only in the fully quantized model
    assert int8_weight_count(full.path)["int8_elements"] - int8_weight_count(res.path)["int8_elements"] >= 43 * 8
    with pytest.raises(BadInputError, match="'nope\\*' matches no quantizable node"):
        quantize_ptq(fp32_onnx, tmp_path / "x.onnx", calib, PTQConfig(exclude=("nope*",)))


def test_exclude_ops_keeps_every_residual_add_float(fp32_onnx, calib, tmp_path):
    """``exclude_ops: [Add]``: no residual Add's output is re-quantized (in the default model every one is), the
    convolutions stay int8, and an operator type the graph lacks keeps nothing (no error: a recipe's setting
    must work on networks without residual adds)."""
    full = quantize_ptq(fp32_onnx, tmp_path / "full.onnx", calib, PTQConfig(calibration_images=32))
    n_adds, requantized = requantized_adds(full.path)
    assert n_adds >= 2 and requantized == n_adds
    res = quantize_ptq(fp32_onnx, tmp_path / "adds.onnx", calib, PTQConfig(calibration_images=32, exclude_ops=["Add"]))
    assert len(res.excluded_nodes) == n_adds
    assert requantized_adds(res.path) == (n_adds, 0)
    assert int8_weight_count(res.path)["int8_elements"] == int8_weight_count(full.path)["int8_elements"]
    none = quantize_ptq(fp32_onnx, tmp_path / "none.onnx", calib,
                        PTQConfig(calibration_images=32, exclude_ops=["LSTM"]))
    assert none.excluded_nodes == []
    with pytest.raises(ValueError, match="'add' is not an ONNX operator type"):
        PTQConfig(exclude_ops=["add"])


def test_sensitivity_measures_every_layer(fp32_onnx, calib, splits):
    rep = layer_sensitivity(fp32_onnx, calib[:32], splits.val.head(100), PTQConfig(calibration_images=32))
    assert len(rep.per_node_drop) >= 8 and 0 <= rep.fp32_accuracy <= 1
    assert all(isinstance(v, float) and abs(v) <= 100 for v in rep.per_node_drop.values())


@pytest.mark.parametrize(
    ("images", "needle"),
    [(np.zeros((4, 32, 32), np.float32), "shape"), (np.zeros((4, 3, 28), np.float32), "shape"),
     (np.zeros((0, 3, 32, 32), np.float32), "no images"), (np.zeros((4, 3, 32, 32), np.int32), "dtype")],
)
def test_bad_calibration_sets(images, needle):
    with pytest.raises(BadInputError, match=needle):
        check_calibration_images(images)


def test_bad_model_files(tmp_path, calib):
    with pytest.raises(BadInputError, match="not found"):
        quantize_ptq(tmp_path / "none.onnx", tmp_path / "o.onnx", calib)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage bytes")
    with pytest.raises(BadInputError, match="not a valid ONNX model"):
        quantize_ptq(bad, tmp_path / "o.onnx", calib)
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("arch", ["resnet", "mobilenetv2", "vgg"])
def test_qat_export_is_int8_and_matches_fakequant(arch, tmp_path, splits, test_subset):
    model = tiny_model(arch)
    q = prepare_qat(model)
    calibrate_ranges(q, splits.train.head(128), batches=2)
    stats = export_qat(q, tmp_path / "qat.onnx", _imgs(test_subset, 16))
    assert stats["folded_weight_quantizers"] >= 5
    kinds = int8_weight_count(tmp_path / "qat.onnx")
    assert kinds["int8_elements"] > 10 * kinds["float_elements"]
    a = predict_all(TorchPredictor(q), test_subset.x[:100])
    b = predict_all(OnnxPredictor(tmp_path / "qat.onnx"), test_subset.x[:100])
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.9  # ORT runs the training's own quantization
    f = predict_all(TorchPredictor(model), test_subset.x[:100])
    assert np.abs(a - b).mean() < np.abs(f - b).mean() + 1e-6


def test_qat_smoke_finetune_runs_on_ort(tmp_path, splits, test_subset):
    torch.manual_seed(0)
    q, result = qat_finetune(tiny_model("resnet"), splits.train.head(256), splits.val.head(64),
                             TrainConfig(epochs=1, batch_size=64, lr=0.01, amp="off", channels_last=False))
    assert len(result.history) == 1
    export_qat(q, tmp_path / "q.onnx", _imgs(test_subset, 8))
    out = OnnxPredictor(tmp_path / "q.onnx")(_imgs(test_subset, 5))
    assert out.shape == (5, 43) and np.isfinite(out).all()


def test_mixed_precision_keeps_float_only_when_it_helps(fp32_onnx, calib, splits, tmp_path):
    from drivecompress.quant.sensitivity import mixed_precision

    val = splits.val.head(100)
    loose = mixed_precision(fp32_onnx, tmp_path / "a.onnx", calib[:32], val, PTQConfig(calibration_images=32), 100.0)
    assert loose.kept_float == [] and loose.per_node_drop == {}  # within budget: no analysis, full int8
    strict = mixed_precision(fp32_onnx, tmp_path / "b.onnx", calib[:32], val, PTQConfig(calibration_images=32), -1.0)
    assert len(strict.per_node_drop) >= 8  # budget impossible: the per-layer analysis ran
    accs = [s["accuracy"] for s in strict.steps]
    assert strict.final_accuracy >= accs[0]  # keeping layers float never made it worse
    assert len(strict.kept_float) <= len(strict.per_node_drop) // 2
    assert (tmp_path / "b.onnx").exists() and not (tmp_path / "b.trial.onnx").exists()


def test_mixed_precision_finds_the_operator_type_that_costs_accuracy(fp32_onnx, calib, splits, tmp_path,
                                                                    monkeypatch):
    """The type stage runs before any per-layer analysis and keeps every Add float when that is what costs
    accuracy. The accuracy is a stand-in read from the real quantized graph (each re-quantized Add costs 2
    points), so the search, not the tiny model's noise, is what is tested."""
    from drivecompress.quant import sensitivity
    from drivecompress.quant.ptq import activation_op_types, preprocess

    def acc(path, data):
        if path == fp32_onnx:
            return 0.9
        return 0.9 - 0.02 * requantized_adds(path)[1]

    monkeypatch.setattr(sensitivity, "_acc", acc)
    rep = sensitivity.mixed_precision(fp32_onnx, tmp_path / "m.onnx", calib[:32], splits.val.head(50),
                                      PTQConfig(calibration_images=32), 0.5)
    types = activation_op_types(onnx.load(str(preprocess(fp32_onnx, tmp_path / "pre.onnx"))))
    assert "Add" in types and sorted(rep.per_op_type_drop) == types  # every weightless type measured once
    assert rep.per_op_type_drop["Add"] == pytest.approx(0.0)
    assert all(v > 1.0 for t, v in rep.per_op_type_drop.items() if t != "Add")
    assert rep.kept_float_ops == ["Add"] and rep.kept_float == [] and rep.per_node_drop == {}
    n_adds, requantized = requantized_adds(tmp_path / "m.onnx")
    assert n_adds >= 2 and requantized == 0 and rep.final_accuracy == pytest.approx(0.9)
    assert [s["kept_float"] for s in rep.steps] == ["-", "every Add"]
    assert not (tmp_path / "m.trial.onnx").exists()


@pytest.mark.parametrize("n", [300, 37])
def test_histogram_calibration_takes_any_number_of_images(fp32_onnx, calib, tmp_path, n):
    images = np.concatenate([calib] * (n // len(calib) + 1))[:n]
    rep = quantize_ptq(fp32_onnx, tmp_path / "q.onnx", images, PTQConfig(calibration="percentile"))
    assert rep is not None
    assert onnx.TensorProto.INT8 in {i.data_type for i in onnx.load(str(tmp_path / "q.onnx")).graph.initializer}

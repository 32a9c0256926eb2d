"""Every technique on networks the zoo does not have (tests/nets.py): each reaches what it was asked or
refuses with a reason, and what it produces computes what it should."""

import numpy as np
import pytest
import torch
import torch.nn as nn

import drivecompress as dc
from drivecompress.data.transforms import deploy_input
from drivecompress.evaluate.complexity import count_macs
from drivecompress.evaluate.predictor import OnnxPredictor, TorchPredictor, predict_all
from drivecompress.prune.unstructured import conv_sparsity
from drivecompress.quant.fakequant import QConv, QLinear
from drivecompress.quant.ptq import int8_weight_count
from drivecompress.quant.qat import calibrate_ranges, export_qat, qat_finetune

from .nets import NETS, make_net

NAMES = sorted(NETS)
NO_TRAIN = {"finetune_epochs": 0, "recovery_epochs": 0, "distill": False}


@pytest.mark.parametrize("name", NAMES)
def test_export_parity(name, tmp_path, mini_data):
    res = dc.export_onnx(make_net(name), tmp_path / "m.onnx", deploy_input(mini_data.test.x[:32]))
    assert res.max_abs_diff <= 1e-3
    assert OnnxPredictor(tmp_path / "m.onnx")(deploy_input(mini_data.test.x[:5])).shape == (5, 43)


@pytest.mark.parametrize("name", NAMES)
def test_structured_pruning_reaches_ratio_saves_and_reloads(name, tmp_path, mini_data):
    net = make_net(name)
    macs = count_macs(net, mini_data.input_shape)
    notes = dc.prune(net, mini_data, dc.PruneConfig(ratio=0.5, round_to=None, **NO_TRAIN))
    assert notes["channels_removed"] >= 0.25  # half the asked ratio at least, else it refuses
    assert count_macs(net, mini_data.input_shape) < 0.75 * macs
    x = torch.as_tensor(deploy_input(mini_data.test.x[:8]))
    with torch.no_grad():
        y = net(x)
    assert y.shape == (8, 43)  # the output layer, found from the graph, kept its 43 classes
    dc.save_model(net, tmp_path / "p", mini_data)
    assert not list(tmp_path.glob("p/*.pt*"))  # safetensors + JSON only
    loaded = dc.load_model(tmp_path / "p", template=lambda: make_net(name, seed=7))
    with torch.no_grad():
        assert torch.allclose(loaded(x), y, atol=1e-5)
    assert dc.export_onnx(loaded, tmp_path / "p.onnx", deploy_input(mini_data.test.x[:16])).max_abs_diff <= 1e-3


def test_user_checkpoint_needs_its_template_and_the_right_one(tmp_path, mini_data):
    net = make_net("branch")
    dc.save_model(net, tmp_path / "c", mini_data)
    with pytest.raises(dc.BadInputError, match="user-defined network"):
        dc.load_model(tmp_path / "c")
    with pytest.raises(dc.BadInputError, match="not in the given model"):
        dc.load_model(tmp_path / "c", template=make_net("dw_seq"))


class NoNorm(nn.Module):
    """No BatchNorm anywhere: a BN-scale criterion can score nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 32, 3, padding=1)
        self.b = nn.Conv2d(32, 32, 3, padding=1)
        self.out = nn.Linear(32, 43)

    def forward(self, x):
        return self.out(torch.relu(self.b(torch.relu(self.a(x)))).mean((2, 3)))


def test_pruning_refuses_with_a_reason_instead_of_pruning_nothing(mini_data):
    with pytest.raises(ValueError, match=r"removed 0\.0% .*importance 'bn_scale' could score only 0 of"):
        dc.prune(NoNorm(), mini_data, dc.PruneConfig(ratio=0.5, importance="bn_scale", round_to=None, **NO_TRAIN))


@pytest.mark.parametrize("name", NAMES)
def test_bn_scale_on_user_nets_reaches_the_ratio(name, mini_data):
    net = make_net(name)
    notes = dc.prune(net, mini_data, dc.PruneConfig(ratio=0.5, importance="bn_scale", round_to=None, **NO_TRAIN))
    assert notes["channels_removed"] >= 0.25


@pytest.mark.parametrize("name", NAMES)
def test_unstructured_reaches_its_sparsity(name, mini_data):
    net = make_net(name)
    notes = dc.sparsify(net, mini_data, dc.UnstructuredConfig(sparsity=0.7, iterations=2, **NO_TRAIN))
    assert 0.7 <= conv_sparsity(net) < 0.71 and notes["conv_sparsity"] == conv_sparsity(net)


@pytest.mark.parametrize("name", NAMES)
def test_ptq_quantizes_without_changing_what_it_computes(name, tmp_path, mini_data, trained_nets):
    net = trained_nets[name]
    dc.quantize(net, mini_data, tmp_path / "q.onnx", dc.PTQConfig(calibration_images=256))
    kinds = int8_weight_count(tmp_path / "q.onnx")
    assert kinds["int8_elements"] > 5 * kinds["float_elements"]
    f = predict_all(TorchPredictor(net), mini_data.test.x)
    q = predict_all(OnnxPredictor(tmp_path / "q.onnx"), mini_data.test.x)
    centred = f - f.mean(1, keepdims=True)
    assert np.linalg.norm(q - f) / np.linalg.norm(centred) < 0.1  # int8 noise, not another function
    assert (f.argmax(1) == q.argmax(1)).mean() >= 0.85  # these small, briefly trained nets have thin margins


def _convs(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in model.modules())


@pytest.mark.parametrize("name", NAMES)
def test_qat_transforms_the_graph_and_its_onnx_equals_the_fakequant_model(name, tmp_path, mini_data, trained_nets):
    net = trained_nets[name]
    q = dc.prepare_qat(net)
    # Every conv and linear became a quantized layer: none was dropped (the old class-name QAT collapsed a
    # depthwise + pointwise Sequential into one conv) and none was left float.
    assert sum(isinstance(m, QConv) for m in q.modules()) == _convs(net)
    assert sum(isinstance(m, QLinear) for m in q.modules()) == sum(isinstance(m, nn.Linear) for m in net.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q.modules())  # folded
    x = torch.as_tensor(deploy_input(mini_data.test.x[:64]))
    with torch.no_grad():  # before calibration only weights are fake-quantized: close to the float model
        assert (q(x).argmax(1) == net(x).argmax(1)).float().mean() >= 0.9
    calibrate_ranges(q, mini_data.train.head(512), batches=4)
    f = predict_all(TorchPredictor(net), mini_data.test.x).argmax(1)
    assert (predict_all(TorchPredictor(q), mini_data.test.x).argmax(1) == f).mean() >= 0.85  # int8 noise only
    q, _ = qat_finetune(net, mini_data.train.head(2000), mini_data.val.head(200),
                        dc.QATConfig(epochs=1, batch_size=64).train_config())
    export_qat(q, tmp_path / "qat.onnx", deploy_input(mini_data.val.x[:32]))
    assert int8_weight_count(tmp_path / "qat.onnx")["int8"] >= _convs(net)
    a = predict_all(TorchPredictor(q), mini_data.test.x).argmax(1)
    b = predict_all(OnnxPredictor(tmp_path / "qat.onnx"), mini_data.test.x).argmax(1)
    assert (a == b).mean() >= 0.99  # ORT runs exactly the trained fake-quant model


def test_qat_api_trains_and_writes_int8(tmp_path, mini_data, trained_nets):
    notes = dc.qat(trained_nets["se_group"], mini_data, tmp_path / "q.onnx",
                   dc.QATConfig(epochs=1, train_subset=512, batch_size=64))
    assert notes["folded_weight_quantizers"] >= 4 and 0 < notes["best_val_accuracy_fakequant"] <= 1
    assert OnnxPredictor(tmp_path / "q.onnx")(deploy_input(mini_data.test.x[:3])).shape == (3, 43)


def test_qat_refuses_an_untraceable_forward():
    class Dynamic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(3, 8, 3)

        def forward(self, x):
            return self.c(x) if x.sum() > 0 else -self.c(x)

    with pytest.raises(ValueError, match="torch.fx can trace"):
        dc.prepare_qat(Dynamic())


def _agreement(a: nn.Module, b: nn.Module, x: np.ndarray) -> float:
    return float((predict_all(TorchPredictor(a), x).argmax(1) == predict_all(TorchPredictor(b), x).argmax(1)).mean())


@pytest.mark.parametrize(("teacher", "student"), [("branch", "dw_seq"), ("se_group", "branch")])
def test_distillation_with_user_nets_as_teacher_and_student(teacher, student, mini_data, trained_nets):
    t, s = trained_nets[teacher], make_net(student, seed=3)
    x = mini_data.test.x
    before = _agreement(s, t, x)
    dc.distill(s, t, mini_data, dc.StudentConfig(epochs=3, lr=0.1, alpha=1.0, temperature=2.0))
    assert _agreement(s, t, x) > before + 0.15


def test_qat_recovery_loss_weighs_safety_classes_and_follows_the_teacher(mini_data, trained_nets):
    from drivecompress.quant.qat import recovery_loss

    net = trained_nets["branch"]
    x = torch.as_tensor(deploy_input(mini_data.val.x[:32]))
    y = torch.as_tensor(mini_data.val.y[:32])
    with torch.no_grad():
        t = net(x)
    plain = recovery_loss(dc.QATConfig(label_smoothing=0.0), net, mini_data, torch.device("cpu"))(net)
    kd = recovery_loss(dc.QATConfig(label_smoothing=0.0, distill=True, alpha=1.0), net, mini_data,
                       torch.device("cpu"))(net)
    assert kd(t, y, x) == pytest.approx(0.0, abs=1e-5)  # logits equal to the teacher's: no distillation loss
    assert plain(t, y, x) > 0
    safety = sorted(mini_data.safety_critical)
    weighted = recovery_loss(dc.QATConfig(label_smoothing=0.0, safety_weight=3.0), net, mini_data,
                             torch.device("cpu"))(net)
    bad = torch.zeros(2, 43)
    bad[:, 42] = 5.0  # confidently wrong on one safety-critical and one other image
    lab = torch.tensor([safety[0], 41])
    per = [weighted(bad[i : i + 1], lab[i : i + 1], x[:1]) for i in range(2)]
    assert per[0] / per[1] == pytest.approx(3.0, rel=1e-4)


def test_qat_recovery_loss_weighs_what_quantization_newly_breaks(mini_data, trained_nets):
    """missed_weight: an image the float model gets right and the fake-quant logits get wrong counts N times;
    the same wrong logits on an image the float model also misses count once."""
    from drivecompress.quant.qat import recovery_loss

    net = trained_nets["branch"]
    x = torch.as_tensor(deploy_input(mini_data.val.x[:1]))
    with torch.no_grad():
        right = int(net(x).argmax(dim=1))
    said = 42 if right != 42 else 41  # what the fake-quant model confidently says (CE equal for any other label)
    wrong = next(c for c in range(43) if c not in (right, said))  # a label the float model does not predict
    bad = torch.zeros(1, 43)
    bad[0, said] = 5.0
    cpu = torch.device("cpu")
    for distill in (False, True):
        cfg = dict(label_smoothing=0.0, distill=distill, alpha=0.5)
        plain = recovery_loss(dc.QATConfig(**cfg), net, mini_data, cpu)(net)
        missed = recovery_loss(dc.QATConfig(**cfg, missed_weight=3.0), net, mini_data, cpu)(net)
        newly = torch.tensor([right])  # the float model was right: newly missed
        both = torch.tensor([wrong])  # the float model was wrong too: not newly missed
        assert float(missed(bad, newly, x)) == pytest.approx(3 * float(plain(bad, newly, x)), rel=1e-4)
        assert float(missed(bad, both, x)) == pytest.approx(float(plain(bad, both, x)), rel=1e-4)

import numpy as np

from drivecompress.evaluate.complexity import count_macs, count_params, onnx_params, size_on_disk
from drivecompress.evaluate.latency import SpeedConfig, measure_speed, ratio_stability, side_by_side
from drivecompress.evaluate.machine import machine_info
from drivecompress.export.onnx import export_onnx
from drivecompress.models import build_model

from .conftest import random_images, tiny_model

QUICK = SpeedConfig(warmup=3, runs=20, throughput_seconds=0.2)


def test_macs_of_a_hand_computable_model():
    spec = {"arch": "vgg", "features": [8], "num_classes": 43}
    model = build_model(spec)
    # conv 3->8, 3x3 at 32x32: 32*32*8*3*9 MACs, plus the linear layer 8*43 (norm/BN/pool are not MACs)
    assert count_macs(model, (3, 32, 32)) == 32 * 32 * 8 * 27 + 8 * 43
    assert count_params(model) == 8 * 27 + 2 * 8 + 8 * 43 + 43


def test_speed_keys_for_torch_and_onnx(tmp_path):
    model = tiny_model("vgg")
    path = export_onnx(model, tmp_path / "v.onnx", random_images(4)).path
    for target in (model, path):
        s = measure_speed(target, QUICK, (3, 32, 32))
        assert set(s) == {"latency_ms_p50", "latency_ms_p99", "throughput_ips"}
        assert 0 < s["latency_ms_p50"] <= s["latency_ms_p99"] and s["throughput_ips"] > 0
    assert size_on_disk(path) == path.stat().st_size
    # ONNX initializers hold the (BN-folded) weights: within a few % of the module's parameters
    assert np.isclose(onnx_params(path), count_params(model), rtol=0.1)


def test_machine_info_records_cpu_flags():
    info = machine_info()
    assert info["cores"] >= 1 and isinstance(info["cpu_flags"], list) and info["cpu"]
    assert {"torch", "onnxruntime"} <= set(info)


def test_side_by_side_measures_latency_and_optionally_throughput_in_the_same_rounds(tmp_path):
    a = export_onnx(tiny_model("vgg"), tmp_path / "a.onnx", random_images(4)).path
    b = export_onnx(tiny_model("resnet"), tmp_path / "b.onnx", random_images(4)).path
    lat_only = side_by_side({"a": a, "b": b}, (3, 32, 32), runs=20, rounds=2, warmup=2)
    assert all(len(r["round_medians_ms"]) == 2 and "throughput_ips" not in r for r in lat_only.values())
    both = side_by_side({"a": a, "b": b}, (3, 32, 32), runs=20, rounds=2, warmup=2, throughput_seconds=0.2)
    assert all(r["throughput_ips"] > 0 and r["latency_ms_p50"] > 0 for r in both.values())


def test_ratio_stability_flags_rounds_that_disagree():
    """Constructed round medians: a steady ratio is quiet; rounds at 5x and 8x (a busy VM) are not."""
    steady = {"baseline": {"round_medians_ms": [3.0, 3.3, 2.9]}, "final": {"round_medians_ms": [0.5, 0.55, 0.48]}}
    st = ratio_stability(steady)
    assert st["quiet"] and st["round_ratios"] == [6.0, 6.0, 6.042] and st["spread"] < 0.01
    busy = {"baseline": {"round_medians_ms": [3.0, 3.2, 2.4]}, "final": {"round_medians_ms": [0.6, 0.4, 0.4]}}
    st = ratio_stability(busy)
    assert not st["quiet"] and st["round_ratios"] == [5.0, 8.0, 6.0] and st["spread"] == 0.5
    assert ratio_stability(busy, limit=0.6)["quiet"]

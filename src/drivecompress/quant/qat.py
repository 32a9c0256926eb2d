"""Quantization-aware training: fold BN, fake-quantize weights and activations, fine-tune with the project's
loop, and export an int8 QDQ ONNX model whose scales and zero-points are the ones learned in training.

The accuracy that counts is the int8 ONNX model's on ONNX Runtime, never the fake-quant simulation's.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import numpy_helper

from drivecompress.data.dataset import LabeledImages
from drivecompress.export.onnx import export_onnx
from drivecompress.models.layers import InputNorm
from drivecompress.quant.fakequant import ActFakeQuant, QConv, QLinear
from drivecompress.train.loop import TrainConfig, TrainResult, fit
from drivecompress.utils.io import atomic_write

_OUTPUT_QUANT_TYPES = ("BasicBlock", "InvertedResidual")


def _is_conv_bn(m: nn.Module) -> bool:
    return isinstance(m, nn.Sequential) and len(m) >= 2 and isinstance(m[0], nn.Conv2d) and isinstance(
        m[1], nn.BatchNorm2d
    )


def _attach_output_quant(module: nn.Module) -> None:
    """Quantize a module's output through a forward hook (residual adds, the normalized input, pooling)."""
    module.qat_out = ActFakeQuant()
    module.register_forward_hook(lambda mod, _inp, out: mod.qat_out(out))


def prepare_qat(model: nn.Module) -> nn.Module:
    """A fake-quantized copy of ``model`` (eval-mode BN statistics folded into the convolutions)."""
    model = copy.deepcopy(model).cpu().eval()

    def convert(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if _is_conv_bn(child):
                setattr(parent, name, QConv(child[0], child[1], relu=any(isinstance(c, nn.ReLU) for c in child)))
            elif isinstance(child, nn.Linear):
                setattr(parent, name, QLinear(child))
            else:
                convert(child)

    convert(model)
    for m in model.modules():
        kind = type(m).__name__
        if isinstance(m, InputNorm | nn.AdaptiveAvgPool2d) or (
            kind in _OUTPUT_QUANT_TYPES and (kind != "InvertedResidual" or m.use_res)
        ):
            _attach_output_quant(m)
    return model


@torch.no_grad()
def calibrate_ranges(model: nn.Module, images: LabeledImages, batches: int = 8, batch_size: int = 64) -> None:
    """Initialise every activation range from a few clean batches before training moves them by EMA."""
    model.train()
    for i, (x, _y) in enumerate(images.batches(batch_size)):
        if i >= batches:
            break
        model(x)
    model.eval()


def fold_weight_quantizers(path: str | Path) -> dict[str, int]:
    """Replace QuantizeLinear(float initializer) by the int8 initializer it computes, so the file stores
    int8 weights and ORT sees the DQ(int8 weight) pattern it fuses into QLinearConv/QGemm."""
    path = Path(path)
    model = onnx.load(str(path))
    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    folded, keep = 0, []
    new_inits = []
    for n in graph.node:
        if n.op_type == "QuantizeLinear" and all(i in consts for i in n.input[:3]) and len(n.input) >= 3:
            x, scale, zp = (consts[i] for i in n.input[:3])
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            shape = [1] * x.ndim
            if scale.ndim == 1 and x.ndim > 1:
                shape[axis] = -1
            info = np.iinfo(zp.dtype)
            q = np.clip(np.round(x / scale.reshape(shape)) + zp.reshape(shape).astype(np.int64), info.min, info.max)
            new_inits.append(numpy_helper.from_array(q.astype(zp.dtype), name=n.output[0]))
            folded += 1
        else:
            keep.append(n)
    del graph.node[:]
    graph.node.extend(keep)
    graph.initializer.extend(new_inits)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    unused = [i for i in graph.initializer if i.name not in used]
    for i in unused:
        graph.initializer.remove(i)
    onnx.checker.check_model(model)
    atomic_write(path, lambda p: onnx.save(model, str(p)))
    return {"folded_weight_quantizers": folded, "removed_float_initializers": len(unused)}


def export_qat(model: nn.Module, path: str | Path, check_images: np.ndarray) -> dict[str, float]:
    """Export the QAT model as an int8 QDQ ONNX model (training's own qparams) and fold the weights to int8.

    The parity check here compares ONNX Runtime with the fake-quant simulation; rounding at quantization
    boundaries can move a few logits by one quantization step, hence the looser tolerance.
    """
    res = export_onnx(model.eval(), path, check_images, tol=float("inf"))
    stats = fold_weight_quantizers(path)
    return {"max_abs_diff_vs_fakequant": res.max_abs_diff, **stats}


def qat_finetune(
    model: nn.Module,
    train: LabeledImages,
    val: LabeledImages,
    cfg: TrainConfig | None = None,
    device: torch.device | None = None,
) -> tuple[nn.Module, TrainResult]:
    """Prepare, calibrate and fine-tune a fake-quantized copy of ``model`` with the project's training loop.

    bf16 autocast is off (fake-quant must see fp32 values) and the learning rate is small: QAT adapts the
    weights to their int8 grid, it does not retrain the network.
    """
    cfg = cfg or QAT_DEFAULTS
    q = prepare_qat(model)
    calibrate_ranges(q, train.head(512, seed=cfg.seed))
    result = fit(q, train, val, dataclasses.replace(cfg, amp="off"), device or torch.device("cpu"),
                 description="QAT")
    return q.cpu().eval(), result


QAT_DEFAULTS = TrainConfig(epochs=2, lr=0.002, optimizer="sgd", schedule="cosine", weight_decay=0.0,
                           label_smoothing=0.1, amp="off", channels_last=False)

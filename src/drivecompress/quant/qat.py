"""Quantization-aware training: fold BN, fake-quantize weights and activations, fine-tune with the project's
loop, and export an int8 QDQ ONNX model whose scales and zero-points are the ones learned in training.

The accuracy that counts is the int8 ONNX model's on ONNX Runtime, never the fake-quant simulation's.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper
from pydantic import Field

from drivecompress.core import Context, State, StepConfig, register_step
from drivecompress.data.api import Data
from drivecompress.data.dataset import LabeledImages
from drivecompress.data.transforms import deploy_input
from drivecompress.distill.losses import kd_kl, missed_weights
from drivecompress.evaluate.machine import int8_saturates
from drivecompress.export.onnx import export_onnx
from drivecompress.quant.fakequant import ActFakeQuant, QConv, QLinear
from drivecompress.train.loop import LossFn, TrainConfig, TrainResult, fit
from drivecompress.utils.device import select_device
from drivecompress.utils.io import atomic_write

_RELU_FUNCS = {F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", F.relu6: "relu6"}


def _act_of(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """'relu' / 'relu6' when ``node`` applies one (as a module, a function or a method), else None."""
    if node.op == "call_module":
        m = modules.get(node.target)
        return "relu6" if isinstance(m, nn.ReLU6) else "relu" if isinstance(m, nn.ReLU) else None
    if node.op == "call_function":
        return _RELU_FUNCS.get(node.target)
    if node.op == "call_method" and node.target in ("relu", "relu_"):
        return "relu"
    return None


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 and users[0].args and users[0].args[0] is node else None


def _set_module(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent_name, _, leaf = target.rpartition(".")
    setattr(gm.get_submodule(parent_name) if parent_name else gm, leaf, module)


def _fuse_layers(gm: fx.GraphModule, qmax: int) -> None:
    """Conv [-> BatchNorm] [-> ReLU/ReLU6] chains become one QConv, Linear becomes QLinear — decided from the
    graph's edges (a chain is fused only when each node is the previous one's only user), never from names."""
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(gm.graph.nodes):
        mod = modules.get(node.target) if node.op == "call_module" else None
        if type(mod) not in (nn.Conv2d, nn.Linear):
            continue
        if calls[node.target] > 1:
            raise ValueError(f"layer '{node.target}' is called {calls[node.target]} times; "
                             "QAT needs one call per layer")
        if type(mod) is nn.Linear:
            _set_module(gm, node.target, QLinear(mod, qmax))
            continue
        if mod.padding_mode != "zeros" or isinstance(mod.padding, str):
            raise ValueError(f"layer '{node.target}': padding {mod.padding!r}/{mod.padding_mode} "
                             "is not supported by QAT")
        chain, bn, act = [node], None, None
        nxt = _only_user(node)
        if nxt is not None and nxt.op == "call_module" and type(modules.get(nxt.target)) is nn.BatchNorm2d:
            bn = modules[nxt.target]
            chain.append(nxt)
            nxt = _only_user(nxt)
        if nxt is not None and (a := _act_of(nxt, modules)) is not None:
            act = a
            chain.append(nxt)
        _set_module(gm, node.target, QConv(mod, bn, act, qmax))
        if len(chain) > 1:
            chain[-1].replace_all_uses_with(node)
            for n in reversed(chain[1:]):
                gm.graph.erase_node(n)


def _insert_input_quantizers(gm: fx.GraphModule) -> int:
    """Quantize the input of every QConv/QLinear whose producer is not already quantized (graph input,
    pooling, additions, concatenations, gates): the value is quantized once, where it is produced, and every
    consumer sees the quantized value — as the exported QDQ graph will compute it."""
    modules = dict(gm.named_modules())

    def quantized(n: fx.Node) -> bool:
        return n.op == "call_module" and isinstance(modules.get(n.target), QConv | ActFakeQuant)

    count = 0
    for node in list(gm.graph.nodes):
        if not (node.op == "call_module" and isinstance(modules.get(node.target), QConv | QLinear)):
            continue
        src = node.args[0]
        if not isinstance(src, fx.Node) or quantized(src):
            continue
        name = f"qat_act_{count}"
        gm.add_submodule(name, ActFakeQuant())
        modules[name] = gm.get_submodule(name)
        with gm.graph.inserting_after(src):
            q = gm.graph.call_module(name, (src,))
        src.replace_all_uses_with(q, delete_user_cb=lambda user, q=q: user is not q)
        count += 1
    for node in gm.graph.nodes:  # a conv whose output is the model's output keeps float logits
        if node.op == "output":
            for src in node.all_input_nodes:
                if src.op == "call_module" and isinstance(modules.get(src.target), QConv):
                    modules[src.target].out_fq = nn.Identity()
    return count


def prepare_qat(model: nn.Module, reduce_range: bool | None = None) -> fx.GraphModule:
    """A fake-quantized copy of ``model`` (eval-mode BN statistics folded into the convolutions), made by
    transforming the graph that ``torch.fx`` traces. A model it cannot trace is refused with the reason.
    ``reduce_range`` (default: when this CPU's int8 kernels saturate) quantizes weights to 7 bits."""
    if reduce_range is None:
        reduce_range = int8_saturates()
    model = copy.deepcopy(model).cpu().eval()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, ... for dynamic control flow
        raise ValueError(f"QAT needs a forward that torch.fx can trace; {type(model).__name__} cannot be: "
                         f"{str(exc).splitlines()[0][:200]}") from exc
    _fuse_layers(gm, 63 if reduce_range else 127)
    _insert_input_quantizers(gm)
    gm.graph.lint()
    gm.delete_all_unused_submodules()  # the folded BatchNorms and fused ReLUs
    gm.recompile()
    if not any(isinstance(m, QConv | QLinear) for m in gm.modules()):
        raise ValueError(f"{type(model).__name__} has no Conv2d or Linear layer to quantize")
    return gm.eval()


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
            # x * (1 / scale) in float32, exactly as torch's fake_quantize kernels round (not x / scale).
            inv = (np.float32(1.0) / scale.astype(np.float32)).reshape(shape)
            q = np.clip(np.rint(x.astype(np.float32) * inv) + zp.reshape(shape).astype(np.int64), info.min, info.max)
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


class QATConfig(StepConfig):
    """Quantization-aware fine-tuning, exported with the learned quantization parameters. The learning rate
    is small: QAT adapts the weights to their int8 grid, it does not retrain the network."""

    epochs: int = Field(2, ge=1)
    lr: float = Field(0.002, gt=0)
    batch_size: int = Field(128, ge=1)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    train_subset: int | None = Field(None, ge=1, description="train on a seeded subset (quick runs)")
    distill: bool = Field(False, description="learn from the float model's soft targets (temperature, alpha)")
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher's soft targets against the labels")
    safety_weight: float = Field(1.0, ge=1, description="weight of safety-critical classes in the label loss")
    missed_weight: float = Field(1.0, ge=1, description="weight of an image the float model classifies right "
                                 "and the fake-quantized model gets wrong (found in every batch), in both terms")
    reduce_range: bool | None = Field(None, description="7-bit weights; default: on CPUs whose int8 kernels "
                                      "saturate (x86 without VNNI)")

    def train_config(self, seed: int = 0) -> TrainConfig:
        """bf16 autocast off (fake-quant must see fp32 values), no weight decay on the int8 grid."""
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, optimizer="sgd",
                           schedule="cosine", warmup_frac=0.0, weight_decay=0.0,
                           label_smoothing=self.label_smoothing, amp="off", channels_last=False, seed=seed)


def qat_finetune(model: nn.Module, train: LabeledImages, val: LabeledImages, cfg: TrainConfig,
                 device: torch.device | None = None, reduce_range: bool | None = None,
                 loss_for: Callable[[nn.Module], LossFn] | None = None) -> tuple[nn.Module, TrainResult]:
    """Prepare, calibrate and fine-tune a fake-quantized copy of ``model`` with the project's training loop;
    ``loss_for(q)`` may build the loss around the prepared model (e.g. distillation from ``model``)."""
    q = prepare_qat(model, reduce_range)
    calibrate_ranges(q, train.head(512, seed=cfg.seed))
    result = fit(q, train, val, dataclasses.replace(cfg, amp="off"), device or torch.device("cpu"),
                 loss_fn=loss_for(q) if loss_for else None, description="QAT")
    return q.cpu().eval(), result


def recovery_loss(cfg: QATConfig, teacher: nn.Module, data: Data,
                  device: torch.device) -> Callable[[nn.Module], LossFn]:
    """The QAT loss: labels (safety-critical classes weighted ``safety_weight``), plus the float model's soft
    targets with ``distill`` — recovery aimed at the classes the gate protects; ``missed_weight`` also weighs the
    images quantization newly breaks (the gate's "lost" images), as in distillation."""
    w = torch.ones(data.num_classes, device=device)
    w[sorted(data.safety_critical)] = cfg.safety_weight
    w = w * (data.num_classes / w.sum())

    def build(q: nn.Module) -> LossFn:
        teacher.to(device).eval()

        def loss(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            # a batch mean, so a safety-critical image counts safety_weight times (and a newly missed one more)
            per_image = w[y] * F.cross_entropy(logits, y, reduction="none", label_smoothing=cfg.label_smoothing)
            if not (cfg.distill or cfg.missed_weight != 1.0):
                return per_image.mean()
            with torch.no_grad():
                t = teacher(x).float()
            iw = missed_weights(logits, t, y, cfg.missed_weight)  # None when missed_weight is 1
            hard = (per_image if iw is None else per_image * iw).mean()
            if not cfg.distill:
                return hard
            soft = kd_kl(logits, t, cfg.temperature, iw)
            return cfg.alpha * soft + (1 - cfg.alpha) * hard

        return loss

    return build


def qat(model: nn.Module, data: Data, out: str | Path, cfg: QATConfig | None = None, *,
        device: torch.device | str | None = None, seed: int = 0) -> dict[str, Any]:
    """QAT-fine-tune a copy of ``model`` on ``data`` and write the int8 ONNX model to ``out``; ``model`` itself
    is left unchanged. Returns notes: validation accuracy of the fake-quant model and the export checks."""
    cfg = cfg or QATConfig()
    dev = device if isinstance(device, torch.device) else select_device(device)
    custom = cfg.distill or cfg.safety_weight != 1.0 or cfg.missed_weight != 1.0
    q, res = qat_finetune(model, data.train.head(cfg.train_subset, seed=seed), data.val, cfg.train_config(seed), dev,
                          cfg.reduce_range, recovery_loss(cfg, model, data, dev) if custom else None)
    model.cpu()
    stats = export_qat(q, out, deploy_input(data.val.x[:64]))
    return {"best_val_accuracy_fakequant": res.best_val_accuracy, **stats}


@register_step("qat", QATConfig)
def _qat_step(state: State, cfg: QATConfig, ctx: Context) -> State:
    out = ctx.step_dir / "model.onnx"
    notes = qat(state.module, ctx.data, out, cfg, device=ctx.device, seed=ctx.seed)
    return State(module=state.module, onnx_path=out, notes=notes)

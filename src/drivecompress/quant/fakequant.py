"""Fake-quantization modules for QAT that mirror what ONNX Runtime executes.

Weights: int8, symmetric, per output channel (scale = max|w|/127), like ORT's per-channel weights.
Activations: uint8, asymmetric, per tensor, range always containing 0 (so zero is exact and a ReLU before
the quantizer has zero-point 0, which lets ORT drop the ReLU and fuse QLinearConv / QLinearAdd).
Exported with the TorchScript ONNX exporter, these become QuantizeLinear/DequantizeLinear pairs.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


class ActFakeQuant(nn.Module):
    """uint8 activation fake-quant with min/max observed (first batches: min/max, then EMA)."""

    def __init__(self, momentum: float = 0.01) -> None:
        super().__init__()
        self.momentum = momentum
        self.observe = True
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.register_buffer("seen", torch.tensor(0, dtype=torch.long))

    @torch.no_grad()
    def _update(self, x: torch.Tensor) -> None:
        lo, hi = x.detach().min().clamp(max=0.0), x.detach().max().clamp(min=0.0)
        if int(self.seen) == 0:
            self.lo.copy_(lo)
            self.hi.copy_(hi)
        else:
            self.lo.lerp_(lo, self.momentum)
            self.hi.lerp_(hi, self.momentum)
        self.seen += 1

    def qparams(self) -> tuple[float, int]:
        """(scale, zero_point) as plain numbers, the form ORT stores."""
        lo, hi = float(self.lo), float(self.hi)
        scale = max(hi - lo, 1e-8) / 255.0
        zp = int(min(255, max(0, round(-lo / scale))))
        return scale, zp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observe and self.training and not _exporting():
            self._update(x)
        if int(self.seen) == 0:
            return x
        scale, zp = self.qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255)


def fake_quant_weight(w: torch.Tensor, qmax: int = 127) -> torch.Tensor:
    """Symmetric per-output-channel int8 fake quantization (straight-through gradient); ``qmax`` 63 keeps
    7-bit weights (``reduce_range``, for CPUs whose int8 kernels saturate)."""
    dims = tuple(range(1, w.ndim))
    scale = (w.detach().abs().amax(dim=dims) / float(qmax)).clamp_min(1e-12).float()
    zp = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    if _exporting():  # constants, so the exported QuantizeLinear(weight) can be folded into int8 storage
        scale = torch.tensor(scale.tolist(), dtype=torch.float32)
        zp = torch.tensor(zp.tolist(), dtype=torch.int32)
    if _exporting():  # ONNX allows only the full int8 range; scale = max|w|/qmax already keeps |q| <= qmax
        return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, -128, 127)
    return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, -qmax - 1, qmax)


class QConv(nn.Module):
    """Conv with BatchNorm folded in (frozen statistics), fake-quantized weights, optional ReLU, and an
    output activation quantizer: exports as DQ(w) -> Conv -> [Relu] -> Q -> DQ, which ORT fuses."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, act: str | None, qmax: int = 127) -> None:
        super().__init__()
        w = conv.weight.detach().clone()
        b = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(conv.out_channels)
        if bn is not None:
            g = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            w = w * g.view(-1, 1, 1, 1)
            b = (b - bn.running_mean) * g + bn.bias.detach()
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(b)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.act = act
        self.qmax = qmax
        self.out_fq: nn.Module = ActFakeQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, fake_quant_weight(self.weight, self.qmax), self.bias, self.stride, self.padding, self.dilation,
                     self.groups)
        if self.act == "relu":
            y = F.relu(y)
        elif self.act == "relu6":
            y = F.relu6(y)
        return self.out_fq(y)


class QLinear(nn.Module):
    """Linear with fake-quantized per-channel weights; float output (the logits)."""

    def __init__(self, linear: nn.Linear, qmax: int = 127) -> None:
        super().__init__()
        self.qmax = qmax
        self.weight = nn.Parameter(linear.weight.detach().clone())
        b = linear.bias.detach().clone() if linear.bias is not None else torch.zeros(linear.out_features)
        self.bias = nn.Parameter(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, fake_quant_weight(self.weight, self.qmax), self.bias)

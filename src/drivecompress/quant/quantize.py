"""Int8 post-training quantization as one call on a module or a float ONNX file, and its recipe step:
export (parity checked), calibrate on the data, quantize with ORT, optionally keep sensitive layers float."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from drivecompress.core import Context, State, register_step
from drivecompress.data.api import Data
from drivecompress.data.transforms import deploy_input
from drivecompress.export.onnx import export_onnx
from drivecompress.quant.ptq import PTQConfig, quantize_ptq
from drivecompress.quant.sensitivity import mixed_precision


def quantize(model: nn.Module | str | Path, data: Data, out: str | Path, cfg: PTQConfig | None = None, *,
             seed: int = 0) -> dict[str, Any]:
    """Int8 PTQ of a module (exported to float ONNX first, parity checked) or of a float ONNX file, calibrated on
    ``data``'s training images; with ``cfg.max_drop_points`` the most sensitive operator types and layers stay
    float. Returns notes (which nodes / types stayed float, per-type and per-node drops when measured)."""
    cfg = cfg or PTQConfig()
    out = Path(out)
    calib = deploy_input(data.train.head(cfg.calibration_images, seed=seed).x)
    tmp = None
    if isinstance(model, nn.Module):
        tmp = out.with_name(out.stem + ".fp32.onnx")
        fp32 = export_onnx(model, tmp, deploy_input(data.val.x[:64])).path
    else:
        fp32 = Path(model)
    try:
        if cfg.max_drop_points is not None:
            rep = mixed_precision(fp32, out, calib, data.val.head(2000, seed=seed), cfg, cfg.max_drop_points)
            return {"kept_float": rep.kept_float, "kept_float_ops": rep.kept_float_ops,
                    "per_op_type_drop": rep.per_op_type_drop, "per_node_drop": rep.per_node_drop,
                    "sensitivity_steps": rep.steps}
        return {"kept_float": quantize_ptq(fp32, out, calib, cfg).excluded_nodes}
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


@register_step("ptq", PTQConfig)
def _ptq_step(state: State, cfg: PTQConfig, ctx: Context) -> State:
    out = ctx.step_dir / "model.onnx"
    notes = quantize(state.module if state.module is not None else state.fp32_onnx, ctx.data, out, cfg, seed=ctx.seed)
    return State(module=state.module, onnx_path=out, fp32_onnx=state.fp32_onnx, notes=notes)

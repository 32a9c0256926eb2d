"""Built-in steps. Each is a typed config + one handler; the runner measures after every step."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from drivecompress.data.transforms import deploy_input
from drivecompress.pipeline.registry import Context, State, StepConfig, register_step
from drivecompress.pipeline.tuning import Tuning, tune
from drivecompress.quant.ptq import PTQConfig, quantize_ptq
from drivecompress.quant.qat import QAT_DEFAULTS, export_qat, qat_finetune
from drivecompress.quant.sensitivity import mixed_precision


class FinetuneStep(Tuning):
    """Train the current model further; with ``distill: true`` the input model's soft targets guide it."""

    epochs: int = Field(2, ge=1)
    distill: bool = Field(False, description="recover with soft targets from the unmodified input model")


@register_step("finetune", FinetuneStep)
def finetune(state: State, cfg: FinetuneStep, ctx: Context) -> State:
    tune(state, cfg, ctx, cfg.epochs, "finetune")
    return State(module=state.module)


class PTQStep(StepConfig):
    """ONNX Runtime static int8 quantization (QDQ, per-channel weights)."""

    calibration: Literal["minmax", "percentile", "entropy"] = "percentile"
    calibration_images: int = Field(512, ge=1)
    percentile: float = Field(99.999, gt=0, le=100)
    exclude: list[str] = Field(default_factory=list)
    max_drop_points: float | None = Field(None, ge=0, description="sensitivity-guided float fallback budget")


@register_step("ptq", PTQStep)
def ptq(state: State, cfg: PTQStep, ctx: Context) -> State:
    from drivecompress.export.onnx import export_onnx

    pc = PTQConfig(calibration=cfg.calibration, calibration_images=cfg.calibration_images,
                   percentile=cfg.percentile, exclude=tuple(cfg.exclude))
    calib = deploy_input(ctx.splits.train.head(cfg.calibration_images, seed=ctx.seed).x)
    fp32 = export_onnx(state.module, ctx.step_dir / "fp32.onnx", deploy_input(ctx.splits.val.x[:64])).path
    out = ctx.step_dir / "model.onnx"
    notes = {}
    if cfg.max_drop_points is not None:
        rep = mixed_precision(fp32, out, calib, ctx.splits.val.head(2000, seed=ctx.seed), pc, cfg.max_drop_points)
        notes = {"kept_float": rep.kept_float, "per_node_drop": rep.per_node_drop}
    else:
        notes = {"kept_float": quantize_ptq(fp32, out, calib, pc).excluded_nodes}
    fp32.unlink()
    return State(module=state.module, onnx_path=out, notes=notes)


class QATStep(StepConfig):
    """Quantization-aware fine-tuning, exported with the learned quantization parameters."""

    epochs: int = Field(QAT_DEFAULTS.epochs, ge=1)
    lr: float = Field(QAT_DEFAULTS.lr, gt=0)
    train_subset: int | None = Field(None, ge=1)


@register_step("qat", QATStep)
def qat(state: State, cfg: QATStep, ctx: Context) -> State:
    import dataclasses

    tc = dataclasses.replace(QAT_DEFAULTS, epochs=cfg.epochs, lr=cfg.lr, seed=ctx.seed)
    q, res = qat_finetune(state.module, ctx.splits.train.head(cfg.train_subset, seed=ctx.seed), ctx.splits.val, tc,
                          ctx.device)
    out = ctx.step_dir / "model.onnx"
    stats = export_qat(q, out, deploy_input(ctx.splits.val.x[:64]))
    return State(module=state.module, onnx_path=out,
                 notes={"best_val_accuracy_fakequant": res.best_val_accuracy, **stats})

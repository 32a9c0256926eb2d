"""The ``share`` recipe step: weight sharing, then the ``.dcz`` archive, and the run continues from the model
decoded from it (so every figure after this step is the archive's)."""

from __future__ import annotations

import dataclasses

from drivecompress.core import Context, State, register_step
from drivecompress.share.dcz import read_dcz, size_table, write_dcz
from drivecompress.share.kmeans import ShareConfig, share


@register_step("share", ShareConfig)
def _share_step(state: State, cfg: ShareConfig, ctx: Context) -> State:
    notes = share(state.module, ctx.data, cfg, teacher=ctx.teacher, device=ctx.device, seed=ctx.seed)
    module = state.module
    if cfg.archive:
        path = ctx.step_dir / "model.dcz"
        write_dcz(path, module, cfg, {"class_names": list(ctx.data.class_names)}, ctx.data.input_shape)
        # Continue from what the archive decodes to, so that every figure after this step is the archive's.
        decoded = read_dcz(path, template=ctx.template())
        notes["archive"] = size_table(path, decoded.layers, state.fp32_onnx)
        notes["archive"]["decode_seconds"] = round(decoded.seconds, 3)
        module = decoded.model
    return dataclasses.replace(state, module=module, notes=notes)

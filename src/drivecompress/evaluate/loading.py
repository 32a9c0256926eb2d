"""Resolve a MODEL argument (checkpoint folder, .onnx file, 'baseline' or 'searched') into something measurable."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from drivecompress.data.api import Data
from drivecompress.data.gtsrb import shipped
from drivecompress.errors import BadInputError
from drivecompress.evaluate.predictor import OnnxPredictor, Predictor, TorchPredictor
from drivecompress.train.checkpoint import load_checkpoint


def baseline_dir() -> Path:
    """The shipped baseline checkpoint ($DRIVECOMPRESS_BASELINE overrides, for tests and forks)."""
    return Path(os.environ.get("DRIVECOMPRESS_BASELINE") or shipped("baseline"))


def searched_dir() -> Path:
    """The shipped searched model: the architecture search's best finalist, its checkpoint and int8
    ``model.onnx`` (``search/ship.py``; $DRIVECOMPRESS_SEARCHED overrides)."""
    return Path(os.environ.get("DRIVECOMPRESS_SEARCHED") or shipped("searched"))


SHIPPED = {"baseline": baseline_dir, "searched": searched_dir}


@dataclass
class LoadedModel:
    """A model ready to measure: a torch module (checkpoints) or just an ONNX file."""

    source: Path
    module: nn.Module | None = None
    onnx_path: Path | None = None
    meta: dict[str, Any] | None = None

    def check_against(self, data: Data) -> LoadedModel:
        """Refuse (exit 2) a model that cannot take ``data``'s images, does not return one tensor of scores,
        or predicts another number of classes, before anything is written. Returns self, so loading and
        checking chain."""
        if self.module is None:
            check_onnx_input(self.onnx_path, data)
        else:
            check_module_against(self.module, data, str(self.source))
        return self

    def predictor(self, threads: int | None = None, device: str | torch.device = "cpu") -> Predictor:
        if self.module is not None:
            return TorchPredictor(self.module, device, name=self.source.name)
        assert self.onnx_path is not None
        return OnnxPredictor(self.onnx_path, threads=threads)


def load_model_arg(arg: str | Path, template: nn.Module | None = None) -> LoadedModel:
    """Accept 'baseline', 'searched' (the shipped models), a checkpoint folder or an ``.onnx`` file; anything
    else is a clear bad-input error. ``template`` rebuilds a checkpoint of a user-defined network (see
    ``train/checkpoint.py``)."""
    path = SHIPPED[str(arg)]() if str(arg) in SHIPPED else Path(arg)
    if not path.exists():
        raise BadInputError(f"{path}: model not found (give a checkpoint folder, an .onnx file, 'baseline' or "
                            "'searched')")
    if path.is_dir():
        module, meta = load_checkpoint(path, template=template)
        return LoadedModel(source=path, module=module, meta=meta)
    if path.suffix.lower() == ".onnx":
        OnnxPredictor(path)  # fails early with a clear message if the file is corrupt
        check_onnx_weights(path)
        return LoadedModel(source=path, onnx_path=path)
    raise BadInputError(f"{path}: not a checkpoint folder or an .onnx file")


def check_onnx_weights(path: Path) -> None:
    """Refuse an ONNX file whose float weights hold NaN or Inf (it would run and compute garbage)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    for init in onnx.load(str(path)).graph.initializer:
        if init.data_type in floats and not np.isfinite(numpy_helper.to_array(init).astype(np.float32)).all():
            raise BadInputError(f"{path}: weight '{init.name}' holds NaN or Inf values")


def check_onnx_input(path: Path, data: Data) -> None:
    """An ONNX model must take the data's images: one NCHW input whose fixed dimensions match."""
    p = OnnxPredictor(path)
    dims = p.input_dims
    if len(dims) != 4:
        raise BadInputError(f"{path}: input '{p.input_name}' has rank {len(dims)}, expected 4 (N, C, H, W)")
    for got, want, what in zip(dims[1:], data.input_shape, ("channels", "height", "width"), strict=True):
        if isinstance(got, int) and got != want:
            raise BadInputError(f"{path}: input '{p.input_name}' has {got} {what}, the data has {want}")
    if isinstance(dims[0], int) and dims[0] != 1:
        raise BadInputError(f"{path}: input batch is fixed at {dims[0]}; export it with a dynamic batch dimension")
    out = p.output_dims
    if len(out) == 2 and isinstance(out[1], int) and out[1] != data.num_classes:
        raise BadInputError(f"{path}: output '{p.output_name}' has {out[1]} classes, the data has {data.num_classes}")


def check_module_against(module: nn.Module, data: Data, where: str) -> None:
    """One forward pass on one image of ``data``'s shape: a wrong input size or channel count, an output that
    is not a single tensor (a tuple, a dict) or of another class count is a one-line BadInputError naming
    ``where``."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(data.example_input())
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise BadInputError(f"{where}: does not take this data's {tuple(data.input_shape)} images "
                            f"({str(exc).splitlines()[0][:200]})") from exc
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise BadInputError(f"{where}: forward returns a {type(out).__name__}, not one tensor of class scores; "
                            "wrap the model so that it returns the logits tensor alone")
    if out.ndim != 2:
        raise BadInputError(f"{where}: outputs a tensor of shape {tuple(out.shape)}, expected (images, classes)")
    if out.shape[1] != data.num_classes:
        raise BadInputError(f"{where}: predicts {out.shape[1]} classes; this data has {data.num_classes} classes")

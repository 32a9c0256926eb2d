"""The Predictor abstraction: ``predict(images) -> logits`` over a PyTorch module or an ONNX Runtime session.

Every metric takes a Predictor, so the fp32 teacher, a pruned module and the int8 ONNX artifact are
measured by exactly the same code. Images are float32 NCHW in [0, 1] (the deploy contract).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn as nn

from drivecompress.data.transforms import deploy_input
from drivecompress.errors import BadInputError
from drivecompress.utils.device import thread_limit


class Predictor(Protocol):
    """Anything that maps a float32 [N,C,H,W] batch in [0, 1] to [N,K] logits (numpy)."""

    name: str

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


class TorchPredictor:
    """Runs a module in eval mode, no grad, fp32."""

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu", name: str = "torch") -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.name = name

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.ascontiguousarray(images, dtype=np.float32), device=self.device)
        return self.model(x).float().cpu().numpy()


class OnnxPredictor:
    """Runs an ONNX model on ONNX Runtime's CPU provider with a chosen thread count."""

    def __init__(self, path: str | Path, threads: int | None = None, name: str | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise BadInputError(f"{path}: ONNX model file not found")
        opts = ort.SessionOptions()
        threads = threads or thread_limit()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
            raise BadInputError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0][:200]})") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise BadInputError(f"{path}: expected one input, found {len(inputs)}")
        self.input_name = inputs[0].name
        self.input_dims = list(inputs[0].shape)
        self.output_name = self.session.get_outputs()[0].name
        self.output_dims = list(self.session.get_outputs()[0].shape)
        self.path = path
        self.name = name or path.stem

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """(C, H, W) when the file fixes them (None for symbolic dimensions)."""
        dims = self.input_dims[1:]
        return tuple(dims) if dims and all(isinstance(d, int) for d in dims) else None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images, dtype=np.float32)
        if self.input_dims and self.input_dims[0] == 1 and len(x) != 1:
            # A graph exported with a fixed batch of 1 (common for deploy models) runs image by image.
            return np.concatenate([self.session.run([self.output_name], {self.input_name: x[i : i + 1]})[0]
                                   for i in range(len(x))]) if len(x) else np.zeros((0, 0), np.float32)
        return self.session.run([self.output_name], {self.input_name: x})[0]


def predict_all(predictor: Predictor, images_uint8: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Logits for a whole uint8 NHWC set, batched (converting to the float NCHW deploy input on the fly)."""
    outs = []
    for i in range(0, len(images_uint8), batch_size):
        x = deploy_input(images_uint8[i : i + batch_size])
        outs.append(predictor(x))
    return np.concatenate(outs) if outs else np.zeros((0, 0), dtype=np.float32)


"""Calibration data for ONNX Runtime's static quantizer: a checked batch reader over float NCHW images."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from drivecompress.data.transforms import deploy_input
from drivecompress.errors import BadInputError


def check_calibration_images(images: np.ndarray, where: str = "calibration set") -> np.ndarray:
    """Calibration images must be the deploy input — float NCHW in [0, 1] — or uint8 NHWC images."""
    arr = np.asarray(images)
    if arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[-1] in (1, 3):
        return deploy_input(arr)
    if arr.ndim != 4:
        raise BadInputError(f"{where}: shape {arr.shape}, expected [N, C, H, W] float or [N, H, W, C] uint8")
    if len(arr) == 0:
        raise BadInputError(f"{where}: no images")
    if not np.issubdtype(arr.dtype, np.floating):
        raise BadInputError(f"{where}: dtype {arr.dtype}, expected float32 in [0, 1] or uint8")
    return arr.astype(np.float32)


class ImageReader(CalibrationDataReader):
    """Feeds images to ORT's calibrator in fixed-size batches (re-iterable via ``rewind``)."""

    def __init__(self, images: np.ndarray, input_name: str = "image", batch_size: int = 32) -> None:
        self.images = check_calibration_images(images)
        self.input_name = input_name
        # Equal batches: ORT's histogram calibrators stack the batches' outputs and fail on a shorter last one
        # (measured: 300 images in batches of 32 -> "inhomogeneous shape"). The largest divisor of N up to
        # batch_size keeps them equal.
        n = len(self.images)
        self.batch_size = max(d for d in range(1, max(1, min(batch_size, n)) + 1) if n % d == 0)
        if n % batch_size == 0:  # a graph with a fixed batch needs exactly that batch
            self.batch_size = batch_size
        self._it: Iterator[dict[str, np.ndarray]] = iter(())
        self.rewind()

    def rewind(self) -> None:
        self._it = (
            {self.input_name: self.images[i : i + self.batch_size]} for i in range(0, len(self.images), self.batch_size)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def __len__(self) -> int:
        return len(self.images)

"""Post-training static int8 quantization through ONNX Runtime's quantization tools.

QDQ format (the format ORT's graph optimizer fuses into QLinearConv/QGemm kernels), int8 weights per output
channel, uint8 activations (the U8S8 combination is the fast path on VNNI CPUs), calibration on a small
training subset, ORT's recommended pre-processing (shape inference + graph optimization, which folds
BatchNorm into Conv), and float fallback for chosen nodes by name or glob pattern.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
from pydantic import Field, field_validator

from drivecompress.core import StepConfig
from drivecompress.errors import BadInputError
from drivecompress.evaluate.machine import int8_saturates
from drivecompress.quant.calibration import ImageReader, check_calibration_images
from drivecompress.utils.io import atomic_write

CalibName = Literal["minmax", "percentile", "entropy"]
_METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}
QUANTIZABLE_OPS = ("Conv", "Gemm", "MatMul")


class PTQConfig(StepConfig):
    """Static quantization settings. Defaults chosen by ``benchmarks/bench_quant.py`` on the shipped baseline:
    percentile calibration lost 0.25 points vs 0.31 for min-max and entropy, at the same int8 speed. Works on
    the float ONNX graph alone, so an ONNX input model can take it."""

    needs_module: ClassVar[bool] = False
    calibration: CalibName = "percentile"
    calibration_images: int = Field(512, ge=1, le=8192, description="images the calibrator collects activations "
                                    "of (ONNX Runtime holds them all in memory: 10^11 asked for 22 GB and was "
                                    "killed; the data's whole training split is used when it has fewer)")
    percentile: float = Field(99.999, gt=0, le=100)
    per_channel: bool = True
    preprocess: bool = True
    exclude: list[str] = Field(default_factory=list,
                               description='node names or glob patterns (e.g. "*classifier*") kept in float')
    exclude_ops: list[str] = Field(default_factory=list, description='operator types kept in float wherever '
                                   'they occur, e.g. ["Add"]: a quantized residual Add re-quantizes the sum of two '
                                   'branches with one uint8 scale (on the shipped baseline it alone cost 0.7 points '
                                   'on validation and the no-passing / dangerous-curve-left losses on test); a type '
                                   'absent from the graph keeps nothing')
    max_drop_points: float | None = Field(None, ge=0, description="sensitivity-guided float fallback budget")
    reduce_range: bool | None = Field(None, description="7-bit weights; default: on CPUs whose int8 kernels "
                                      "saturate (x86 without VNNI)")

    @field_validator("exclude_ops")
    @classmethod
    def _known_ops(cls, ops: list[str]) -> list[str]:
        """A misspelt type ("add") would silently keep nothing float: refuse what ONNX does not define."""
        bad = [op for op in ops if not onnx.defs.has(op)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not an ONNX operator type (they are case-sensitive: Add, Mul, Concat)")
        return ops


@dataclass(frozen=True)
class PTQResult:
    path: Path
    quantized_nodes: list[str]
    excluded_nodes: list[str]


def _load_onnx(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise BadInputError(f"{path}: ONNX model file not found")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf DecodeError, ValidationError, ...
        raise BadInputError(f"{path}: not a valid ONNX model ({exc.__class__.__name__})") from exc
    return model


def quantizable_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes whose weights ORT quantizes (Conv/Gemm/MatMul)."""
    return [n.name for n in model.graph.node if n.op_type in QUANTIZABLE_OPS]


def activation_op_types(model: onnx.ModelProto) -> list[str]:
    """Operator types of the graph that ORT's quantizer also quantizes without weights (its default set is the
    union of its QLinear and QDQ registries): the candidates for keeping a whole type float (a residual
    ``Add``, a ``Concat`` of two branches) that a per-layer analysis of Conv/Gemm cannot see."""
    quantized = set(QLinearOpsRegistry) | set(QDQRegistry)
    return sorted({n.op_type for n in model.graph.node} & quantized - set(QUANTIZABLE_OPS))


def resolve_patterns(names: list[str], patterns: list[str]) -> list[str]:
    """Node names matching any pattern; a pattern matching nothing is an error naming it."""
    out: list[str] = []
    for pat in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pat) or n == pat]
        if not hits:
            raise BadInputError(f"exclude pattern '{pat}' matches no quantizable node (e.g. {names[:3]})")
        out += [h for h in hits if h not in out]
    return out


@contextlib.contextmanager
def _root_logger_quiet():
    """ORT's quantizer logs every node through the root logger at INFO (``logging.info``), so quieting it means
    raising the root level; the caller's level is restored after, since a library must not change a user's
    logging for good."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def preprocess(src: Path, dst: Path) -> Path:
    """ORT's recommended pre-processing: symbolic shape inference and graph optimization.

    Run from a scratch folder: where symbolic inference gives up, ORT saves its partial model into the working
    directory (``sym_shape_infer_temp.onnx`` and an external-data file, litter in a user's folder) and raises a
    bare Exception. Such a graph is then pre-processed without it: the optimization still runs, and the
    quantizer does ONNX's own shape inference."""
    src, dst = Path(src).resolve(), Path(dst).resolve()
    with tempfile.TemporaryDirectory(prefix="drivecompress-pre-") as scratch, contextlib.chdir(scratch):
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
        except Exception as exc:  # ORT raises a plain Exception("Incomplete symbolic shape inference")
            if "symbolic shape inference" not in str(exc):
                raise
            logging.getLogger(__name__).warning("%s: %s; pre-processed without it", src.name, exc)
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return dst


def quantize_ptq(
    fp32_onnx: str | Path,
    out: str | Path,
    calibration: np.ndarray,
    cfg: PTQConfig | None = None,
    only_nodes: list[str] | None = None,
) -> PTQResult:
    """Quantize ``fp32_onnx`` to an int8 QDQ model at ``out`` (written atomically).

    ``only_nodes`` restricts quantization to those nodes (used by the per-layer sensitivity analysis).
    """
    cfg = cfg or PTQConfig()
    src = Path(fp32_onnx)
    _load_onnx(src)
    images = check_calibration_images(calibration)[: cfg.calibration_images]
    if cfg.calibration not in _METHODS:
        raise BadInputError(f"calibration method '{cfg.calibration}' unknown (choose {', '.join(_METHODS)})")
    with tempfile.TemporaryDirectory(prefix="dc-ptq-") as tmp, _root_logger_quiet():
        model_in = preprocess(src, Path(tmp) / "pre.onnx") if cfg.preprocess else src
        proto = onnx.load(str(model_in))
        fixed = proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value  # 0: a dynamic batch
        if fixed:  # a graph exported with a fixed batch (often 1) is calibrated at that batch
            if len(images) < fixed:
                raise BadInputError(f"{src}: its input takes batches of exactly {fixed} images; "
                                    f"calibration has {len(images)}")
            images = images[: len(images) // fixed * fixed]
        names = quantizable_nodes(proto)
        excluded = resolve_patterns(names, cfg.exclude)
        excluded += [n.name for n in proto.graph.node
                     if n.op_type in cfg.exclude_ops and n.name and n.name not in excluded]
        extra = {"ActivationSymmetric": False, "WeightSymmetric": True}
        if cfg.calibration == "percentile":
            extra["CalibPercentile"] = cfg.percentile

        def write(tmp_out: Path) -> None:
            # ORT's histogram calibrators print their bin count and percentile on stdout at every call (two
            # lines per network, a hundred in one search's log; stdout is for --json results): kept at DEBUG.
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                _quantize(tmp_out)
            if text := printed.getvalue().strip():
                logging.getLogger(__name__).debug("onnxruntime calibrator: %s", text)

        def _quantize(tmp_out: Path) -> None:
            quantize_static(
                str(model_in), str(tmp_out), ImageReader(images, batch_size=fixed or 32),
                quant_format=QuantFormat.QDQ, per_channel=cfg.per_channel,
                reduce_range=int8_saturates() if cfg.reduce_range is None else cfg.reduce_range,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=_METHODS[cfg.calibration],
                nodes_to_exclude=excluded or None, nodes_to_quantize=only_nodes,
                extra_options=extra,
            )

        atomic_write(out, write)
    quantized = [n for n in (only_nodes or names) if n not in excluded]
    return PTQResult(path=Path(out), quantized_nodes=quantized, excluded_nodes=excluded)


def int8_weight_count(path: str | Path) -> dict[str, int]:
    """How many initializers are stored as int8/uint8 vs float: proof the graph really holds int8 weights."""
    model = onnx.load(str(path))
    kinds = {"int8": 0, "uint8": 0, "float": 0, "int8_elements": 0, "float_elements": 0}
    for init in model.graph.initializer:
        n = int(np.prod(init.dims)) if init.dims else 1
        if init.data_type == onnx.TensorProto.INT8:
            kinds["int8"] += 1
            kinds["int8_elements"] += n
        elif init.data_type == onnx.TensorProto.UINT8:
            kinds["uint8"] += 1
        elif init.data_type == onnx.TensorProto.FLOAT:
            kinds["float"] += 1
            kinds["float_elements"] += n
    return kinds

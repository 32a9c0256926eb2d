"""drivecompress: make driving perception models small and fast, and prove it on the real runtime.

The public API. Every technique is a function on any ``nn.Module`` (or, for graph-only steps, an ONNX file)
with its own typed config; the same config is the recipe step's, so the API, the recipes and the CLI run
the same code. Importing this package registers every recipe step.

    import drivecompress as dc
    data = dc.Data.from_arrays(x_train, y_train, x_test, y_test, safety_critical=[0, 1])
    result = dc.compress(my_net, {"steps": [{"type": "prune", "ratio": 0.3}, {"type": "ptq"}]},
                         data=data, out="runs/mine")
    print(result.passed, result.model_path)
"""

from drivecompress.api import CompressResult, compress, load_model, save_model, unpack
from drivecompress.core import StepConfig, register_step, step_types
from drivecompress.data.api import Data
from drivecompress.distill.step import DistillConfig, OnnxTeacher, TeacherEnsemble
from drivecompress.distill.student import StudentConfig, distill
from drivecompress.errors import BadInputError, GateRefusedError
from drivecompress.export.onnx import export_onnx
from drivecompress.pipeline.gate import check_gate
from drivecompress.pipeline.recipe import Budgets, Recipe, Targets, load_recipe
from drivecompress.pipeline.start import StartConfig
from drivecompress.prune.iterative import prune
from drivecompress.prune.structured import PruneConfig
from drivecompress.prune.unstructured import UnstructuredConfig, sparsify
from drivecompress.quant.ptq import PTQConfig
from drivecompress.quant.qat import QATConfig, prepare_qat, qat
from drivecompress.quant.quantize import quantize
from drivecompress.search.config import SearchConfig
from drivecompress.search.nas import search
from drivecompress.search.ship import ship_finalist
from drivecompress.share.dcz import read_dcz, write_dcz
from drivecompress.share.kmeans import ShareConfig, share
from drivecompress.share.step import _share_step  # noqa: F401  (registers the "share" step)
from drivecompress.train.finetune import FinetuneConfig, finetune
from drivecompress.utils.device import limit_threads

__version__ = "0.2.0"

__all__ = [
    "BadInputError",
    "Budgets",
    "CompressResult",
    "Data",
    "DistillConfig",
    "FinetuneConfig",
    "GateRefusedError",
    "OnnxTeacher",
    "PTQConfig",
    "PruneConfig",
    "QATConfig",
    "Recipe",
    "SearchConfig",
    "ShareConfig",
    "StartConfig",
    "StepConfig",
    "StudentConfig",
    "Targets",
    "TeacherEnsemble",
    "UnstructuredConfig",
    "check_gate",
    "compress",
    "distill",
    "export_onnx",
    "finetune",
    "limit_threads",
    "load_model",
    "load_recipe",
    "prepare_qat",
    "prune",
    "qat",
    "quantize",
    "read_dcz",
    "register_step",
    "save_model",
    "search",
    "share",
    "ship_finalist",
    "sparsify",
    "step_types",
    "unpack",
    "write_dcz",
]

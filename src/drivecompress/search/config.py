"""The architecture search's configuration: its own module so that the search (nas.py), its finalize phase and
its summary all import it without importing each other."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivecompress.search.space import FAMILIES, Family

# A screened network is timed untrained against the reference (search/meter.py), whose ratio still moved by up
# to 8-17% between measurements on the AVX2 VM (and once 35%): a first timing over the margin is timed again
# before the network is pruned. Networks this far over the budget are kept and trained; the finalist pick
# applies the exact budget.
SCREEN_MARGIN = 0.10


class SearchConfig(BaseModel):
    """The search's budget and proxy. ``quick`` shrinks everything to seconds (tests)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    trials: int = Field(40, ge=1, description="finished trials in the study (all workers together)")
    budget_minutes: float | None = Field(None, gt=0, description="stop this worker after this long (checked "
                                          "after every proxy epoch; a trial cut short is pruned and marked "
                                          "stopped_by_budget)")
    proxy_images: int = Field(6000, ge=16)
    proxy_epochs: int = Field(3, ge=1)
    val_images: int = Field(2000, ge=16)
    min_first_epoch_accuracy: float | None = Field(
        None, ge=0, le=1, description="prune a trial below this after epoch 1; default: twice chance (2 / classes). "
        "A fixed 20% pruned every trial on GTSRB: after one proxy epoch of 6,000 images all were at 15-18%")
    calibration_images: int = Field(128, ge=8)
    latency_runs: int = Field(300, ge=10)
    heartbeat_seconds: int = Field(30, ge=1)
    grace_seconds: int = Field(90, ge=2)
    seed: int = Field(0, ge=0, lt=2**31, description="the new study's NSGA-II seed and the proxy's training "
                      "subset: one command and seed find the same trials; a worker joining a study draws its own")
    quick: bool = False
    families: list[Family] = Field(default_factory=lambda: list(FAMILIES), min_length=1, description=(
        "network families searched; one study keeps its families (Optuna cannot change a parameter's choices "
        "mid-study). On this CPU the MobileNets' finalists trained 2-3x slower than the ResNets' for 1-1.3 "
        "points less (README): 'resnet' alone fits more trials and finalists into a time budget"))
    enqueue: list[dict[str, Any]] = Field(default_factory=list, description=(
        "the new study's first trials, as the search's own parameter names (e.g. recipes/student.yaml's layout: "
        "family resnet, stem 16, first_stride 2, full_res_block false, width0 48, depth0 1, width1 64, depth1 1, "
        "width2 96, depth2 1): start from known good networks instead of NSGA-II's random first generation"))
    # the finalize phase (search/finalize.py): the best candidates trained fully, quantized and gated
    finalists: int = Field(0, ge=0, description="Pareto candidates (best proxy accuracy first) trained fully, "
                           "quantized (QAT) and gated like compress; 0: none")
    min_speedup: float | None = Field(None, gt=0, description="finalists only among front members at least "
                                      "this much faster (int8) than the teacher's fp32, re-measured serially")
    max_latency_ms: float | None = Field(None, gt=0, description="the car's budget in milliseconds (steadier than a "
                                         "ratio to the teacher's own timing), on a quiet machine (search/meter.py): "
                                         "a sampled network is timed untrained first and not trained when over it "
                                         "by more than SCREEN_MARGIN; finalists "
                                         "only among front members whose int8 batch-1 latency, re-measured "
                                         "serially, is at most this")
    final_teacher: list[str] = Field(default_factory=list, description=(
        "checkpoint folders or .onnx files that teach the finalists instead of the search's teacher, as one "
        "ensemble when several (their recipes' 'teacher:' key); the finalists are still measured and gated against "
        "the teacher"))
    final_epochs: int = Field(30, ge=1, description="distillation epochs of a finalist")
    final_swa_epochs: int = Field(8, ge=0, description="of which the last N are weight-averaged")
    final_qat_epochs: int = Field(2, ge=1)
    final_train_subset: int | None = Field(None, ge=1)
    final_test_subset: int | None = Field(None, ge=1)
    max_accuracy_drop: float = Field(0.5, gt=0, description="the finalists' gate budget, points")
    max_safety_recall_drop: float = Field(1.0, gt=0, description="per safety-critical class, points")
    target_speedup: float = Field(10.0, gt=0, description="reported against, like a recipe's target")

    @model_validator(mode="before")
    @classmethod
    def _average_a_quarter(cls, data: Any) -> Any:
        """``final_epochs`` given without ``final_swa_epochs``: average the last quarter (at most 8, as the
        shipped student); below 8 epochs none (an average of one epoch would only hold the lr at swa_lr)."""
        if isinstance(data, dict) and "final_epochs" in data and "final_swa_epochs" not in data:
            e = int(data["final_epochs"])
            data = {**data, "final_swa_epochs": min(8, e // 4) if e >= 8 else 0}
        return data

    @model_validator(mode="after")
    def _check(self) -> SearchConfig:
        if len(set(self.families)) != len(self.families):
            raise ValueError(f"families {self.families}: each family once")  # the CLI names it --families
        if self.final_swa_epochs >= self.final_epochs:
            raise ValueError(f"final_swa_epochs ({self.final_swa_epochs}) must be fewer than final_epochs "
                             f"({self.final_epochs})")
        return self

    @classmethod
    def quick_config(cls, **kw: Any) -> SearchConfig:
        """A search in seconds (tests, ``--quick``): a tiny proxy, one final epoch, small subsets."""
        return cls(**{"proxy_images": 256, "proxy_epochs": 1, "val_images": 128, "calibration_images": 16,
                      "latency_runs": 20, "min_first_epoch_accuracy": 0.0, "heartbeat_seconds": 1,
                      "grace_seconds": 4, "quick": True, "final_epochs": 1, "final_swa_epochs": 0,
                      "final_qat_epochs": 1, "final_train_subset": 256, "final_test_subset": 300, **kw})

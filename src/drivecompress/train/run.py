"""``drivecompress train``: build a model from the zoo, train it with the one loop, checkpoint the best."""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass

from drivecompress.data.api import Data
from drivecompress.data.dataset import channel_stats
from drivecompress.errors import BadInputError
from drivecompress.models import build_model, default_spec
from drivecompress.train import distributed as ddp
from drivecompress.train.checkpoint import META, WEIGHTS, save_checkpoint
from drivecompress.train.loop import TrainConfig, evaluate_accuracy, fit
from drivecompress.utils.device import select_device
from drivecompress.utils.runlock import RunLock


@dataclass(frozen=True)
class TrainJob:
    """Everything ``drivecompress train`` needs besides the loop's hyper-parameters (a pydantic dataclass: its
    bounds are the CLI's too)."""

    out: Path
    arch: str = "resnet"
    width: float = Field(1.0, gt=0, le=8)
    per_image_norm: bool = True
    data: str | None = None
    device: str | None = None
    val_fraction: float = Field(0.1, gt=0, lt=1)
    subset: int | None = Field(None, ge=1)
    overwrite: bool = False
    command: str | None = None


def check_out_folder(out: Path, overwrite: bool) -> None:
    """Refuse to replace an existing checkpoint unless asked (nothing on disk is lost by accident)."""
    if not overwrite and ((out / WEIGHTS).exists() or (out / META).exists()):
        raise BadInputError(f"{out}: already holds a checkpoint; choose another --out or pass --overwrite")


def train_model(job: TrainJob, cfg: TrainConfig) -> dict[str, Any]:
    """Train, keep the best-on-validation weights, measure test accuracy, write the checkpoint."""
    check_out_folder(job.out, job.overwrite)
    device = select_device(job.device)
    data = Data.from_npz(job.data, val_fraction=job.val_fraction, seed=cfg.seed)
    splits = data.splits
    train, val = splits.train.head(job.subset, cfg.seed), splits.val
    mean, std = channel_stats(train.x)
    spec = default_spec(job.arch, job.width, num_classes=data.num_classes)
    spec["input_norm"] = {"mean": mean, "std": std, "per_image": job.per_image_norm}
    model = build_model(spec)
    meta: dict[str, Any] = {
        "class_names": list(data.class_names),
        "training": {
            "command": job.command,
            "config": {**asdict(cfg), "arch": job.arch, "width": job.width, "val_fraction": job.val_fraction,
                       "subset": job.subset, "per_image_norm": job.per_image_norm},
            "device": str(device),
            "torch": torch.__version__,
            "data": data.source,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    }

    def on_best(m: torch.nn.Module, rec: dict[str, float]) -> None:  # fit calls it on rank 0 only
        save_checkpoint(job.out, m, {**meta, "metrics": {"val_accuracy": rec["val_acc"], "epoch": rec["epoch"]}})

    if ddp.is_main():
        try:
            job.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInputError(f"{job.out}: cannot write the checkpoint folder ({exc.strerror})") from exc
    with RunLock(job.out) if ddp.is_main() else contextlib.nullcontext():  # one writer per checkpoint folder
        result = fit(model, train, val, cfg, device, on_best=on_best, description=f"train {job.arch}")
        test_acc = evaluate_accuracy(model, splits.test, device)
        meta["training"]["seconds"] = round(result.seconds, 1)
        meta["training"]["history"] = result.history
        meta["training"]["processes"] = ddp.world_size()
        meta["metrics"] = {
            "val_accuracy": result.best_val_accuracy,
            "best_epoch": result.best_epoch,
            "test_accuracy": test_acc,
            "params": sum(p.numel() for p in model.parameters()),
        }
        if ddp.is_main():
            save_checkpoint(job.out, model, meta)
    return {"out": str(job.out), **meta["metrics"], "seconds": round(result.seconds, 1),
            "processes": ddp.world_size()}

"""``drivecompress train``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from drivecompress.commands.base import command
from drivecompress.models import available_models


@command("train", "Train a model from the zoo with the project's training loop; saves the best-on-validation "
         "checkpoint (model.safetensors + model.json) to --out.")
def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    p.add_argument("--arch", default="resnet", choices=available_models(), help="model family (default resnet)")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (default 1.0)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate (default 0.1 for SGD)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--schedule", choices=["onecycle", "cosine"], default="onecycle")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--class-balance", type=float, default=0.0,
                   help="oversample rare classes: draw images with probability count(class)^-B "
                        "(0 = natural frequencies, 1 = all classes equally often; default 0)")
    p.add_argument("--scale-min", type=float, default=0.55,
                   help="smallest random shrink of a sign (default 0.55; smaller trains on more distant signs)")
    p.add_argument("--swa-epochs", type=int, default=0,
                   help="stochastic weight averaging: hold the lr at --swa-lr for the last N epochs and ship the "
                        "average of their weights (BatchNorm statistics recomputed; default 0 = off)")
    p.add_argument("--swa-lr", type=float, default=0.03, help="constant lr of the SWA epochs (default 0.03)")
    p.add_argument("--no-augment", action="store_true", help="disable augmentation")
    p.add_argument("--norm", choices=["per-image", "dataset"], default="per-image",
                   help="input normalization inside the model (default per-image contrast normalization)")
    p.add_argument("--amp", choices=["auto", "off", "bf16"], default="auto",
                   help="bf16 autocast (auto: on when the CPU/GPU supports bf16 natively)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1, help="fraction of tracks held out for validation")
    p.add_argument("--subset", type=int, help="train on a random subset of N images (quick runs)")
    p.add_argument("--max-batches", "--max-batches-per-epoch", dest="max_batches_per_epoch", type=int,
                   help="cap batches per epoch (quick runs)")
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint already in --out")
    p.add_argument("--nproc-per-node", type=int, default=1, metavar="N",
                   help="data-parallel training in N local processes (torchrun, gloo on CPU / NCCL on GPU); "
                        "--batch-size stays the global batch. Several machines: see README")


_TRAIN_FLAGS = ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule", "label_smoothing", "amp",
                "seed", "max_batches_per_epoch", "class_balance", "swa_epochs", "swa_lr")
"""The flags that are TrainConfig's fields, under the same names."""


@_args.bind
def _run(a: argparse.Namespace) -> dict[str, Any]:
    from drivecompress.commands.base import config_from_flags
    from drivecompress.data.transforms import AugmentConfig
    from drivecompress.errors import BadInputError
    from drivecompress.train.loop import TrainConfig
    from drivecompress.train.run import TrainJob, train_model

    if a.nproc_per_node < 1:
        raise BadInputError(f"--nproc-per-node: must be >= 1 (got {a.nproc_per_node})")
    # the bounds are TrainConfig's, AugmentConfig's and TrainJob's own (the API refuses the same values)
    aug = config_from_flags(AugmentConfig, a, ("scale_min",))
    cfg = config_from_flags(TrainConfig, a, _TRAIN_FLAGS, augment=not a.no_augment, augment_cfg=aug)
    job = config_from_flags(TrainJob, a, ("out", "arch", "width", "data", "device", "val_fraction", "subset",
                                         "overwrite"), per_image_norm=a.norm == "per-image",
                            command="drivecompress " + shlex.join(sys.argv[1:]))
    return train_model(job, cfg)

"""The one training loop. Plain training, fine-tuning after pruning, distillation and QAT all run through
``fit``: they differ only in the model passed in and the ``loss_fn`` (e.g. a distillation loss that closes
over a teacher)."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from drivecompress.data.dataset import LabeledImages
from drivecompress.data.transforms import AugmentConfig, augment_batch, mix_batch, to_tensor_batch
from drivecompress.evaluate.predictor import TorchPredictor, predict_all
from drivecompress.train import distributed as ddp
from drivecompress.train.progress import TrainProgress
from drivecompress.utils.device import seed_everything

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(logits, labels, images) -> loss``; images let a distillation loss query its teacher."""


@pydantic_dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (defaults: the shipped baseline's recipe). A pydantic dataclass:
    its bounds are checked on construction, so the API and the CLI (``drivecompress train``) refuse the same
    values with the same message."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["onecycle", "cosine"] = "onecycle"
    warmup_frac: float = Field(0.15, ge=0, lt=1)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    augment: bool = True
    augment_cfg: AugmentConfig = field(default_factory=AugmentConfig)
    amp: Literal["auto", "off", "bf16"] = "auto"
    channels_last: bool = True
    seed: int = 0
    eval_batch_size: int = Field(512, ge=1)
    max_batches_per_epoch: int | None = Field(None, ge=1)
    class_balance: float = Field(0.0, ge=0, le=1)
    swa_epochs: int = Field(0, ge=0)
    swa_lr: float = Field(0.03, gt=0)
    mixup: float = Field(0.0, ge=0, le=1)
    """fraction of each batch replaced by unlabelled mixtures of two images (``mix_batch``): only for a
    ``loss_fn`` that distils, since the plain cross-entropy ignores them"""

    @model_validator(mode="after")
    def _swa_within_epochs(self) -> TrainConfig:
        if self.swa_epochs >= self.epochs:
            raise ValueError(f"swa_epochs ({self.swa_epochs}) must be fewer than epochs ({self.epochs})")
        return self


@dataclass
class TrainResult:
    """What ``fit`` returns: the best-on-validation weights are already loaded into the model."""

    best_val_accuracy: float
    best_epoch: int
    history: list[dict[str, float]]
    seconds: float


def _amp_enabled(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast roughly halves CPU training time where the CPU has native bf16 (AVX512-BF16/AMX)."""
    if cfg.amp == "off":
        return False
    if cfg.amp == "bf16":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(getattr(torch.backends.mkldnn, "is_available", lambda: False)()) and _cpu_has_bf16()


def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = fh.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def epoch_order(labels: np.ndarray, balance: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of one epoch. ``balance`` 0 is a plain permutation; above 0 each image is drawn (with
    replacement) with probability proportional to ``count(class) ** -balance``, so rare classes (GTSRB's
    pedestrians sign has 240 training images, speed limits ten times more) are seen more often; 1 makes
    every class equally likely, 0.5 is the usual compromise."""
    if balance <= 0:
        return rng.permutation(len(labels))
    counts = np.bincount(labels)
    w = counts[labels].astype(np.float64) ** -balance
    return rng.choice(len(labels), size=len(labels), replace=True, p=w / w.sum())


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)


def _lr_factor(cfg: TrainConfig, progress: float) -> float:
    """One-cycle (linear warm-up, cosine decay) or plain cosine, as a factor of the peak lr."""
    if cfg.schedule == "onecycle" and progress < cfg.warmup_frac:
        return 0.04 + 0.96 * progress / cfg.warmup_frac
    start = cfg.warmup_frac if cfg.schedule == "onecycle" else 0.0
    t = (progress - start) / max(1e-8, 1.0 - start)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The lr at ``step``. Without SWA: the schedule over all epochs. With ``swa_epochs`` N: the schedule
    runs over the first epochs and decays to ``swa_lr`` instead of 0, then the lr stays at ``swa_lr`` for the
    last N epochs, whose weights are averaged (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima")."""
    main_steps = steps_per_epoch * (cfg.epochs - cfg.swa_epochs)
    if cfg.swa_epochs <= 0:
        return cfg.lr * _lr_factor(cfg, step / max(1, main_steps))
    if step >= main_steps:
        return cfg.swa_lr
    progress = step / max(1, main_steps)
    factor = _lr_factor(cfg, progress)
    if cfg.schedule == "onecycle" and progress < cfg.warmup_frac:
        return cfg.lr * factor
    return cfg.swa_lr + (cfg.lr - cfg.swa_lr) * factor


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, data: LabeledImages, device: torch.device | str,
                      batch_size: int = 512) -> float:
    """Top-1 accuracy of a module on a labelled set, through the same Predictor every metric uses (eval mode,
    fp32, no grad); the module's train/eval mode and device are restored afterwards."""
    if len(data) == 0:
        return float("nan")
    was_training = model.training
    param = next(model.parameters(), None)
    home = param.device if param is not None else torch.device("cpu")
    logits = predict_all(TorchPredictor(model, device), data.x, batch_size)
    model.to(home).train(was_training)
    return float((logits.argmax(1) == data.y).mean())


def _val_accuracy(model: nn.Module, val: LabeledImages, device: torch.device, batch_size: int) -> float:
    """Validation accuracy; under torch.distributed each rank predicts its share and the counts are summed."""
    if not ddp.active():
        return evaluate_accuracy(model, val, device, batch_size)
    idx = ddp.shard(torch.arange(len(val))).numpy()
    was_training = model.training
    logits = predict_all(TorchPredictor(model, device), val.x[idx], batch_size) if len(idx) else np.zeros((0, 1))
    model.to(device).train(was_training)
    correct, n = ddp.sum_over_ranks(float((logits.argmax(1) == val.y[idx]).sum()), float(len(idx)))
    return correct / n if n else float("nan")


def onednn_1x1_hazard(model: nn.Module) -> list[str]:
    """Strided 1x1 convolutions with fewer than 16 input channels. On channels-last (NHWC) tensors, oneDNN's
    1x1 backward-weights kernel writes past its workspace for them (uxlfoundation/oneDNN#6035: AVX2 needs
    IC >= 8, AVX-512 IC >= 16): training hung in the suite, two threads spinning in
    jit_avx2_1x1_convolution_bwd_weights, after a pruning left a stride-2 shortcut a few channels. ``fit``
    trains such a model in NCHW, which takes oneDNN's blocked path."""
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1 and m.in_channels < 16]


def _train_batches(x_all: torch.Tensor, s_all: torch.Tensor, steps: int, cfg: TrainConfig,
                   device: torch.device, gen: torch.Generator, rng: np.random.Generator) -> Iterator[torch.Tensor]:
    """One epoch of training inputs, augmented as in training (for the BatchNorm re-estimation pass)."""
    perm = torch.as_tensor(rng.permutation(len(x_all)))
    for b in range(steps):
        idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        if len(idx) == 0:
            break
        x = to_tensor_batch(x_all[idx], device)
        if cfg.augment:
            x = augment_batch(x, s_all[idx], cfg.augment_cfg, gen)
        yield x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def fit(
    model: nn.Module,
    train: LabeledImages,
    val: LabeledImages,
    cfg: TrainConfig,
    device: torch.device,
    loss_fn: LossFn | None = None,
    on_best: Callable[[nn.Module, dict[str, float]], None] | None = None,
    description: str = "train",
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place and leave it holding its best-on-validation weights.

    ``on_best`` is called whenever validation accuracy improves (used to checkpoint to disk atomically);
    ``on_epoch`` after every epoch with its record.
    With ``cfg.swa_epochs`` > 0 the model left behind is instead the average of the weights at the end of
    each of the last ``swa_epochs`` epochs, with BatchNorm statistics recomputed on the training images; the
    result reports its validation accuracy as ``best_val_accuracy`` and ``best_epoch`` = ``cfg.epochs``.
    """
    seed_everything(cfg.seed)
    if cfg.channels_last and device.type == "cpu" and onednn_1x1_hazard(model):
        cfg = dataclasses.replace(cfg, channels_last=False)
        # weights left channels-last by an earlier fit would make the convolution pick NHWC again
        model.to(memory_format=torch.contiguous_format)
    world, main = ddp.world_size(), ddp.is_main()
    gen = torch.Generator(device=device).manual_seed(cfg.seed + ddp.rank())  # one augmentation seed per rank
    rng = np.random.default_rng(cfg.seed)  # the same epoch order on every rank; each takes its share
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    net = ddp.wrap(model, device)
    loss_fn = loss_fn or (lambda logits, y, _x: F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing))
    opt = _make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    if 0 < len(train) % cfg.batch_size < world:
        steps_per_epoch -= 1  # a last batch smaller than the number of ranks would leave a rank without images
    if cfg.max_batches_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_batches_per_epoch)
    amp = _amp_enabled(cfg, device)
    x_all = torch.as_tensor(train.x)  # uint8 NHWC, stays on CPU; batches are moved as needed
    y_all = torch.as_tensor(train.y)
    s_all = torch.as_tensor(train.sizes)
    best_acc, best_epoch, best_state, history = -1.0, -1, None, []
    swa: torch.optim.swa_utils.AveragedModel | None = None
    start = time.perf_counter()
    step = 0
    with TrainProgress(description, cfg.epochs, steps_per_epoch, enabled=main) as bar:
        for epoch in range(cfg.epochs):
            net.train()
            perm = torch.as_tensor(epoch_order(train.y, cfg.class_balance, rng))
            run_loss, run_correct, seen, seen_labelled = 0.0, 0, 0, 0
            for b in range(steps_per_epoch):
                idx = ddp.shard(perm[b * cfg.batch_size : (b + 1) * cfg.batch_size])
                x = to_tensor_batch(x_all[idx], device)
                y = y_all[idx].to(device)
                if cfg.augment:
                    x = augment_batch(x, s_all[idx], cfg.augment_cfg, gen)
                if cfg.mixup > 0:
                    x, y = mix_batch(x, y, cfg.mixup, gen)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                for g in opt.param_groups:
                    g["lr"] = learning_rate(cfg, step, steps_per_epoch)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = net(x)
                    loss = loss_fn(logits.float(), y, x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                run_loss += float(loss.detach()) * len(y)
                labelled = y >= 0  # mixed images have no label to be right about
                run_correct += int((logits.argmax(1) == y)[labelled].sum())
                seen += len(y)
                seen_labelled += int(labelled.sum())
                bar.advance(loss=run_loss / seen, acc=run_correct / max(seen_labelled, 1))
            run_loss, run_correct, seen, seen_labelled = ddp.sum_over_ranks(run_loss, run_correct, seen, seen_labelled)
            val_acc = _val_accuracy(model, val, device, cfg.eval_batch_size)
            rec = {"epoch": epoch + 1, "train_loss": run_loss / seen, "train_acc": run_correct / max(seen_labelled, 1),
                   "val_acc": val_acc, "lr": opt.param_groups[0]["lr"]}
            history.append(rec)
            bar.end_epoch(val_acc)
            if on_epoch is not None:
                on_epoch(rec)  # may raise to stop early (architecture search prunes hopeless trials)
            if cfg.swa_epochs > 0 and epoch >= cfg.epochs - cfg.swa_epochs:
                if swa is None:
                    swa = torch.optim.swa_utils.AveragedModel(model)
                swa.update_parameters(model)
            if val_acc > best_acc:
                best_acc, best_epoch = val_acc, epoch + 1
                best_state = copy.deepcopy(model.state_dict())
                if on_best is not None and main:
                    on_best(model, rec)
    if swa is not None:
        model.load_state_dict(swa.module.state_dict())
        # Averaged weights never produced the running statistics stored with them: re-estimate them exactly
        # (cumulative average) on one epoch of augmented training batches.
        torch.optim.swa_utils.update_bn(_train_batches(x_all, s_all, steps_per_epoch, cfg, device, gen, rng), model)
        ddp.broadcast_state(model)  # each rank re-estimated BN on its own batches: keep rank 0's
        best_acc, best_epoch = _val_accuracy(model, val, device, cfg.eval_batch_size), cfg.epochs
        history.append({"epoch": cfg.epochs, "swa_models": int(swa.n_averaged), "val_acc": best_acc})
    elif best_state is not None:
        model.load_state_dict(best_state)
    ddp.broadcast_state(model)  # identical on every rank (they are already; this makes it a guarantee)
    model.to(memory_format=torch.contiguous_format).eval()
    return TrainResult(best_acc, best_epoch, history, time.perf_counter() - start)

"""Run under torchrun by tests/test_distributed.py: a few steps of ``fit`` on a fixed batch sequence, then
rank 0 saves the weights. ``die`` makes rank 1 exit right after joining the group."""

import sys

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

from drivecompress.data.dataset import LabeledImages
from drivecompress.train import distributed as ddp
from drivecompress.train.loop import TrainConfig, fit


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 43))


def small_data() -> tuple[LabeledImages, LabeledImages]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (160, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 43, 160)
    return LabeledImages.of(x[:128], y[:128]), LabeledImages.of(x[128:], y[128:])


CONFIG = TrainConfig(epochs=2, batch_size=32, lr=0.05, augment=False, channels_last=False, amp="off",
                     schedule="cosine", warmup_frac=0.0, label_smoothing=0.0, eval_batch_size=16)


def main() -> None:
    out, mode = sys.argv[1], sys.argv[2]
    ddp.init_from_env(torch.device("cpu"), timeout_s=20)
    if mode == "die" and ddp.rank() == 1:
        sys.exit(7)
    model = small_net()
    train, val = small_data()
    fit(model, train, val, CONFIG, torch.device("cpu"), description="dist test")
    if ddp.is_main():
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
    ddp.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

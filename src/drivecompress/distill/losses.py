"""Distillation losses as small pure functions (tested on hand-computed cases)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton et al. (2015): KL(teacher_T || student_T) x T², so gradients keep their scale as T grows."""
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                     temperature: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0) -> torch.Tensor:
    """alpha x KD + (1 - alpha) x cross-entropy on the true labels (alpha=0 is plain cross-entropy)."""
    ce = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    if alpha == 0:
        return ce
    return alpha * kd_kl(student_logits, teacher_logits, temperature) + (1 - alpha) * ce


def hard_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the teacher's argmax (hard-label distillation)."""
    return F.cross_entropy(student_logits, teacher_logits.argmax(dim=1))


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis (2017): channel-pooled squared activations, L2-normalised per image."""
    return F.normalize(features.pow(2).mean(dim=1).flatten(1), dim=1)


def attention_transfer(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Match where the two networks look; spatial sizes are aligned by pooling the larger map."""
    if student_feat.shape[-1] != teacher_feat.shape[-1]:
        size = min(student_feat.shape[-1], teacher_feat.shape[-1])
        student_feat = F.adaptive_avg_pool2d(student_feat, size)
        teacher_feat = F.adaptive_avg_pool2d(teacher_feat, size)
    return (attention_map(student_feat) - attention_map(teacher_feat)).pow(2).mean()


class FeatureAdapter(nn.Module):
    """A learned 1x1 conv mapping student channels to teacher channels for feature (hint) matching."""

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def feature_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, adapter: nn.Module | None) -> torch.Tensor:
    """MSE between (adapted) student features and teacher features, spatially aligned."""
    s = adapter(student_feat) if adapter is not None else student_feat
    if s.shape[-1] != teacher_feat.shape[-1]:
        s = F.adaptive_avg_pool2d(s, teacher_feat.shape[-1])
    return F.mse_loss(s, teacher_feat)

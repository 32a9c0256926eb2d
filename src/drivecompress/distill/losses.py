"""Distillation losses as small pure functions (tested on hand-computed cases)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from drivecompress.data.transforms import UNLABELLED


def _mean(per_image: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """A batch mean in which image i counts ``weights[i]`` times (plain mean without weights)."""
    return per_image.mean() if weights is None else (per_image * weights).mean()


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0,
          weights: torch.Tensor | None = None) -> torch.Tensor:
    """Hinton et al. (2015): KL(teacher_T || student_T) x T², so gradients keep their scale as T grows."""
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=1)
    per_image = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=1)
    return _mean(per_image, weights) * (t * t)


def missed_weights(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                   weight: float) -> torch.Tensor | None:
    """Per-image weights: ``weight`` for an image the teacher classifies right and the student gets wrong (what
    the compressed model newly misses, found afresh in every batch), 1 elsewhere; None when ``weight`` is 1."""
    if weight == 1.0:
        return None
    missed = (teacher_logits.argmax(dim=1) == labels) & (student_logits.detach().argmax(dim=1) != labels)
    return 1.0 + (weight - 1.0) * missed.float()


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                     temperature: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0,
                     weights: torch.Tensor | None = None) -> torch.Tensor:
    """alpha x KD + (1 - alpha) x cross-entropy on the true labels (alpha=0 is plain cross-entropy); ``weights``
    makes image i count weights[i] times in both terms."""
    ce = _mean(F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing, reduction="none"), weights)
    labelled = int((labels != UNLABELLED).sum())
    if 0 < labelled < len(labels):  # mixed images (mixup) carry no label: average over the labelled ones only,
        ce = ce * (len(labels) / labelled)  # so mixing a fraction of the batch does not shrink the label term
    if alpha == 0:
        return ce
    return alpha * kd_kl(student_logits, teacher_logits, temperature, weights) + (1 - alpha) * ce


def hard_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                     weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy against the teacher's argmax (hard-label distillation)."""
    return _mean(F.cross_entropy(student_logits, teacher_logits.argmax(dim=1), reduction="none"), weights)


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
    """A learned 1x1 conv mapping student channels to teacher channels for feature (hint) matching.

    Starts as the identity when the channel counts match: a pruned or same-width model's features are already
    in the teacher's basis, and a random start would first teach the adapter instead of the model."""

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)
        if student_channels == teacher_channels:
            nn.init.dirac_(self.proj.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def feature_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, adapter: nn.Module | None) -> torch.Tensor:
    """MSE between (adapted) student features and teacher features, spatially aligned."""
    s = adapter(student_feat) if adapter is not None else student_feat
    if s.shape[-1] != teacher_feat.shape[-1]:
        s = F.adaptive_avg_pool2d(s, teacher_feat.shape[-1])
    return F.mse_loss(s, teacher_feat)

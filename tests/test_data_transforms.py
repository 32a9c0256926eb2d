import numpy as np
import torch

from drivecompress.data.transforms import AugmentConfig, augment_batch, to_tensor_batch

IDENTITY = AugmentConfig(scale_min=1.0, scale_max=1.0, rotate_deg=0.0, shift_px=0.0, brightness=(1.0, 1.0),
                         gamma=(1.0, 1.0), channel_gain=0.0, blur_prob=0.0)


def _canvas(size: int = 20) -> torch.Tensor:
    """A sign of ``size`` px at the top-left of a black canvas, with a left/right asymmetric pattern."""
    x = torch.zeros(1, 3, 32, 32)
    x[:, :, :size, :size] = 0.3
    x[:, 0, :size, : size // 3] = 1.0  # bright red stripe on the left only
    return x


def test_identity_config_leaves_images_unchanged():
    x = _canvas()
    y = augment_batch(x, torch.tensor([20]), IDENTITY, torch.Generator().manual_seed(0))
    assert torch.allclose(x, y, atol=1e-5)


def test_output_is_valid_and_canvas_stays_anchored_top_left():
    x = _canvas().repeat(64, 1, 1, 1)
    y = augment_batch(x, torch.full((64,), 20), AugmentConfig(), torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    # the sign stays at the corner: far bottom-right quadrant stays black for a 20 px sign
    assert float(y[:, :, 26:, 26:].abs().max()) == 0.0
    assert float(y[:, :, :8, :8].mean()) > 0.1


def test_no_horizontal_flip():
    """Keep-left must not become keep-right: the red stripe stays on the left half of the sign."""
    cfg = AugmentConfig(brightness=(1.0, 1.0), gamma=(1.0, 1.0), channel_gain=0.0)
    x = _canvas().repeat(64, 1, 1, 1)
    y = augment_batch(x, torch.full((64,), 20), cfg, torch.Generator().manual_seed(1))
    red_excess = (y[:, 0] - y[:, 1]).clamp_min(0)  # where red dominates
    cols = torch.arange(32).float()
    centre = (red_excess.sum(1) * cols).sum(1) / red_excess.sum((1, 2)).clamp_min(1e-6)
    sign_extent = (y.sum(1) > 0).any(1).float().mul(cols + 1).amax(1)
    assert bool((centre < sign_extent / 2).all())


def test_augmentation_is_seeded_and_varies():
    x = _canvas().repeat(8, 1, 1, 1)
    s = torch.full((8,), 20)
    a = augment_batch(x, s, gen=torch.Generator().manual_seed(5))
    b = augment_batch(x, s, gen=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])


def test_to_tensor_batch_layout():
    x = np.zeros((2, 32, 32, 3), np.uint8)
    x[..., 1] = 255
    t = to_tensor_batch(x)
    assert t.shape == (2, 3, 32, 32) and t.dtype == torch.float32
    assert float(t[:, 1].min()) == 1.0 and float(t[:, 0].max()) == 0.0


def test_mix_batch_mixes_the_chosen_fraction_between_two_images_and_unlabels_them():
    from drivecompress.data.transforms import UNLABELLED, mix_batch

    x = torch.rand(256, 3, 8, 8)
    y = torch.arange(256) % 43
    same_x, same_y = mix_batch(x, y, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(same_x, x) and torch.equal(same_y, y)
    mx, my = mix_batch(x, y, 0.5, torch.Generator().manual_seed(0))
    mixed = my == UNLABELLED
    assert 0.35 < float(mixed.float().mean()) < 0.65
    assert torch.equal(mx[~mixed], x[~mixed]) and torch.equal(my[~mixed], y[~mixed])
    # each mixed image is lam * x_i + (1 - lam) * x_j for some partner j and 0 <= lam <= 1
    for i in torch.nonzero(mixed).flatten().tolist():
        e = (x[i] - x).flatten(1)  # x_i - x_j for every j
        d = (mx[i] - x).flatten(1)
        lam = (d * e).sum(1) / (e * e).sum(1).clamp_min(1e-12)
        residual = (d - lam[:, None] * e).abs().amax(1)
        j = int(residual.argmin())
        assert float(residual[j]) < 1e-5 and -1e-6 <= float(lam[j]) <= 1 + 1e-6
    assert float(mx.min()) >= 0 and float(mx.max()) <= 1
    again_x, again_y = mix_batch(x, y, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(again_x, mx) and torch.equal(again_y, my)  # seeded

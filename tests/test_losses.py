"""The training loss's terms against slow per-pixel references."""

from types import SimpleNamespace

import pytest
import torch

from inpaint_online.losses import InpaintLoss, LossConfig, hole_psnr


def _batch(seed=0, b=2, h=24, w=20):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(b, 3, h, w, generator=g)
    mask = (torch.rand(b, 1, h, w, generator=g) < 0.2).float()
    x = y * (1 - mask)
    pred = (y + 0.2 * torch.randn(b, 3, h, w, generator=g)).clamp(0, 1)
    return SimpleNamespace(x=x, y=y, mask=mask), pred


def _reference(pred, batch, hole_l1, hole_l2, valid_l1):
    """Sum over every (sample, channel, pixel) of the hole / known sets, pixel by pixel."""
    s1 = s2 = sv = 0.0
    n_hole = n_valid = 0
    b, c, h, w = pred.shape
    for i in range(b):
        for yy in range(h):
            for xx in range(w):
                for ch in range(c):
                    e = float(pred[i, ch, yy, xx] - batch.y[i, ch, yy, xx])
                    if batch.mask[i, 0, yy, xx] > 0:
                        s1, s2, n_hole = s1 + abs(e), s2 + e * e, n_hole + 1
                    else:
                        sv, n_valid = sv + abs(e), n_valid + 1
    return hole_l1 * s1 / n_hole + hole_l2 * s2 / n_hole + valid_l1 * sv / n_valid, s2 / n_hole


def test_hole_l2_is_the_mean_squared_error_in_the_holes():
    batch, pred = _batch()
    loss = InpaintLoss(LossConfig(hole_l1=0.5, hole_l2=3.0, valid_l1=0.1, ssim=0.0))
    total, parts = loss(pred, batch)
    want_total, want_mse = _reference(pred, batch, 0.5, 3.0, 0.1)
    assert parts["hole_l2"].item() == pytest.approx(want_mse, rel=1e-5)
    assert total.item() == pytest.approx(want_total, rel=1e-5)
    # the term is what PSNR in holes scores: 10 log10(1 / mse), pooled over the batch here
    mse_per_sample = 10 ** (-hole_psnr(pred, batch.y, batch.mask) / 10)
    assert mse_per_sample.min() <= parts["hole_l2"] <= mse_per_sample.max()


def test_hole_l2_off_by_default_and_a_perfect_fill_costs_nothing():
    batch, pred = _batch(seed=1)
    total, parts = InpaintLoss(LossConfig(ssim=0.0))(pred, batch)
    assert "hole_l2" not in parts
    assert total.item() == pytest.approx(_reference(pred, batch, 1.0, 0.0, 0.1)[0], rel=1e-5)
    total, parts = InpaintLoss(LossConfig(hole_l2=2.0))(batch.y.clone(), batch)
    assert total.item() == pytest.approx(0.0, abs=1e-6)


def test_negative_weights_are_refused():
    with pytest.raises(ValueError, match="loss weights must be >= 0"):
        InpaintLoss(LossConfig(hole_l2=-1.0))


def test_per_sample_hole_terms_weigh_every_sample_the_same():
    """loss.per_sample: each sample's mean over its own holes, averaged over the samples that
    have holes (a sample with none counts for nothing); the pooled mean otherwise."""
    batch, pred = _batch(seed=2, b=3)
    batch.mask[0, :, :, :] = 0
    batch.mask[1, :, :4, :4] = 1                      # few holes ...
    batch.mask[1, :, 4:] = 0
    batch.mask[2, :, :, :15] = 1                      # ... and many
    batch.x = batch.y * (1 - batch.mask)
    per = []
    for i in (1, 2):
        one = SimpleNamespace(x=batch.x[i:i + 1], y=batch.y[i:i + 1], mask=batch.mask[i:i + 1])
        per.append(_reference(pred[i:i + 1], one, 1.0, 0.0, 0.0)[0])
    _, parts = InpaintLoss(LossConfig(ssim=0.0, hole_l2=1.0, per_sample=True))(pred, batch)
    assert parts["hole_l1"].item() == pytest.approx(sum(per) / 2, rel=1e-5)
    _, pooled = InpaintLoss(LossConfig(ssim=0.0, hole_l2=1.0))(pred, batch)
    assert pooled["hole_l1"].item() == pytest.approx(_reference(pred, batch, 1.0, 0.0, 0.0)[0], rel=1e-5)
    assert abs(pooled["hole_l1"].item() - parts["hole_l1"].item()) > 1e-3
    # squared error too: per sample, then the mean
    mse = [float(((pred[i] - batch.y[i]) ** 2 * batch.mask[i]).sum() / (3 * batch.mask[i].sum()))
           for i in (1, 2)]
    assert parts["hole_l2"].item() == pytest.approx(sum(mse) / 2, rel=1e-5)


def test_blend_l1_scores_the_blended_fills_in_the_holes():
    """loss.blend_l1: the L1 of the dual model's blended fills (before its correction) in the
    holes, per sample when loss.per_sample; added with its weight; absent without a blend."""
    batch, pred = _batch(seed=3, b=2)
    blend = torch.rand_like(pred)
    base_total, base = InpaintLoss(LossConfig(ssim=0.0))(pred, batch)
    total, parts = InpaintLoss(LossConfig(ssim=0.0, blend_l1=0.5))(pred, batch, blend)
    want = float(((blend - batch.y).abs() * batch.mask).sum() / (3 * batch.mask.sum()))
    assert parts["blend_l1"].item() == pytest.approx(want, rel=1e-5)
    assert total.item() == pytest.approx(base_total.item() + 0.5 * want, rel=1e-5)
    assert "blend_l1" not in base
    _, none = InpaintLoss(LossConfig(ssim=0.0, blend_l1=0.5))(pred, batch)
    assert "blend_l1" not in none
    _, per = InpaintLoss(LossConfig(ssim=0.0, blend_l1=0.5, per_sample=True))(pred, batch, blend)
    each = [float(((blend[i] - batch.y[i]).abs() * batch.mask[i]).sum() / (3 * batch.mask[i].sum()))
            for i in range(2)]
    assert per["blend_l1"].item() == pytest.approx(sum(each) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="loss weights must be >= 0"):
        InpaintLoss(LossConfig(blend_l1=-1.0))

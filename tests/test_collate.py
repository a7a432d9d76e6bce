"""WarpCollate: orientation, determinism per (seed, rank, step), mask augmentation."""
import numpy as np
import pytest
import torch

from inpaint_online.collate import CollateConfig, WarpCollate, widen_mask
from inpaint_online.data import DEPTH_OFFSET
from inpaint_online.warp_params import WarpSamplerConfig

from conftest import real_disparity, real_image


def real_batch(n=6, size=192):
    """Crops of the real Middlebury disparity and a real photo, as the dataset returns them."""
    d = real_disparity()[0, 0]
    img = torch.nn.functional.interpolate(real_image(), size=d.shape, mode="bilinear")[0]
    g = torch.Generator().manual_seed(0)
    ys = torch.randint(0, d.shape[0] - size, (n,), generator=g)
    xs = torch.randint(0, d.shape[1] - size, (n,), generator=g)
    depth = torch.stack([d[y:y + size, x:x + size] for y, x in zip(ys, xs)])[:, None]
    rgb = torch.stack([img[:, y:y + size, x:x + size] for y, x in zip(ys, xs)])
    return {"rgb": (rgb * 255).round().to(torch.uint8),
            "depth": ((depth * 65535).round().to(torch.int32) - DEPTH_OFFSET).to(torch.int16),
            "width": torch.full((n,), float(d.shape[1])), "index": torch.arange(n),
            "seed": torch.arange(n), "box": torch.zeros(n, 4), "flip": torch.zeros(n, dtype=torch.bool)}


def collate(left_p=0.5, augment=False, **kw):
    warp = WarpSamplerConfig.level(2, left_p=left_p, closing_choices=((0, 0),))
    return WarpCollate(warp, CollateConfig(**kw), augment=augment)


def runs(row: np.ndarray):
    """(start, end) of every run of True in a 1-D bool array."""
    padded = np.concatenate([[False], row, [False]]).astype(np.int8)
    starts = np.flatnonzero(np.diff(padded) == 1)
    ends = np.flatnonzero(np.diff(padded) == -1) - 1
    return zip(starts, ends)


@pytest.mark.parametrize("left_p", [0.0, 1.0])
def test_holes_have_foreground_on_their_left_in_both_views(left_p):
    b = collate(left_p=left_p, retries=0)(real_batch(), step=0)
    assert bool(b.params.left.all()) == (left_p == 1.0)
    fg_left, total = 0, 0
    full_depth = torch.where(b.mask > 0, torch.nan, b.depth)   # depth at known pixels
    for m, d in zip(b.mask[:, 0].numpy() > 0, full_depth[:, 0].numpy()):
        for r, row in enumerate(m):
            for s, e in runs(row):
                if s < 3 or e > row.size - 4:
                    continue
                total += 1
                fg_left += d[r, s - 2] > d[r, e + 2]
    # real disparity is noisy (slanted, textured surfaces); a wrong orientation gives < 0.2
    assert total > 50 and fg_left / total > 0.8, (fg_left, total)


def test_input_is_the_target_with_holes_zeroed():
    b = collate(retries=0)(real_batch(), step=3)
    assert b.mask.dtype == torch.float32 and set(b.mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(b.x, b.y * (1 - b.mask)) and torch.all(b.depth[b.mask.expand_as(b.depth) > 0] == 0)
    assert 0.001 < b.mask.mean() < 0.3


def test_left_view_samples_are_mirrored_targets():
    cpu = real_batch()
    b = collate(left_p=1.0, retries=0)(cpu, step=0)
    assert torch.allclose(b.y, cpu["rgb"].float().flip(-1) / 255)


def test_same_step_same_masks_other_step_or_rank_other_masks():
    cpu = real_batch()
    c0, c1 = WarpCollate(seed=7, rank=0), WarpCollate(seed=7, rank=1)
    a, b = c0(cpu, step=5), c0(cpu, step=5)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.params.divergence, b.params.divergence)
    assert not torch.equal(c0(cpu, step=6).params.divergence, a.params.divergence)
    assert not torch.equal(c1(cpu, step=5).params.divergence, a.params.divergence)


def test_widen_mask_grows_toward_each_side_by_the_drawn_width():
    m = torch.zeros(3, 1, 2, 40, dtype=torch.bool)
    m[..., 18:21] = True
    out = widen_mask(m, right=torch.tensor([0, 5, 2]), left=torch.tensor([0, 0, 3]))
    cols = [torch.nonzero(o[0, 0]).flatten().tolist() for o in out]
    assert cols[0] == [18, 19, 20]
    assert cols[1] == list(range(18, 26))
    assert cols[2] == list(range(15, 23))


def test_augmentation_only_grows_the_masks():
    cpu = real_batch()
    plain = collate(retries=0)(cpu, step=1).mask
    aug = collate(retries=0, augment=True, widen_bg_p=1.0)(cpu, step=1).mask
    assert torch.all(aug >= plain) and aug.sum() > plain.sum()


def test_retry_redraws_samples_with_too_few_holes():
    cpu = real_batch(n=16)
    warp = WarpSamplerConfig.level(1, closing_choices=((0, 0),))
    counts = {}
    for retries in (0, 2):
        b = WarpCollate(warp, CollateConfig(min_hole_px=1500, retries=retries), seed=3)(cpu, step=0)
        counts[retries] = int((b.mask.flatten(1).sum(1) < 1500).sum())
    assert counts[2] < counts[0]

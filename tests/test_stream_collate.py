"""WarpCollate: orientation, determinism per (seed, rank, step), mask augmentation."""
import contextlib
import os
import sys

import numpy as np
import pytest
import torch
from conftest import photo_depth, real_image

from inpaint_online.stream import DEPTH_OFFSET, CollateConfig, WarpCollate
from inpaint_online.stream.collate import widen_mask
from inpaint_online.warp import WarpSamplerConfig


def real_batch(n=6, size=192):
    """Crops of a real photo and its depth, as the dataset returns them."""
    d = photo_depth()[0, 0]
    img = real_image("coffee.png")[0]
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
    # depth of a real photo has slopes and soft edges; a wrong orientation gives < 0.2
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
    warp = WarpSamplerConfig.level(1, closing_choices=((0, 0),), edge_dilation_choices=(0,))
    counts = {}
    for retries in (0, 2):
        b = WarpCollate(warp, CollateConfig(min_hole_px=1500, retries=retries), seed=3)(cpu, step=0)
        counts[retries] = int((b.mask.flatten(1).sum(1) < 1500).sum())
    assert counts[2] < counts[0]


# ------------------------------------------------------------------ no host syncs in the hot path

# Every way a tensor's value reaches Python (each one waits for the device on CUDA).
SYNC_ENTRY_POINTS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__",
                     "nonzero", "numpy", "cpu")
# Justified exceptions, by (file, function): both read the B numbers the sampler drew with
# its CPU generator — host memory by design, never a tensor on the training device.
HOST_SIDE = {("params.py", "sample"),           # bound of the drawn shifts
             ("collate.py", "widen_mask"),      # largest drawn widening width
             ("collate.py", "_crop_size")}      # the crop side, from the CPU batch


@contextlib.contextmanager
def trap_host_syncs():
    hits = []
    originals = {name: getattr(torch.Tensor, name) for name in SYNC_ENTRY_POINTS}

    def trapped(name, fn):
        def call(self, *args, **kwargs):
            f, where = sys._getframe(1), None
            while f is not None:
                key = (os.path.basename(f.f_code.co_filename), f.f_code.co_name)
                if key in HOST_SIDE:
                    break
                if where is None and "inpaint_online" in f.f_code.co_filename:
                    where = f"{key[0]}:{f.f_lineno} {key[1]}"
                f = f.f_back
            else:
                hits.append(f"Tensor.{name} from {where}")
            return fn(self, *args, **kwargs)
        return call

    for name, fn in originals.items():
        setattr(torch.Tensor, name, trapped(name, fn))
    try:
        yield hits
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


def clip_batch(n=3, t=3, size=96):
    b = real_batch(n=n, size=size)
    # consecutive frames: the content moves 2 px per frame
    b["rgb"] = torch.stack([b["rgb"].roll(2 * i, -1) for i in range(t)], 1)
    b["depth"] = torch.stack([b["depth"].roll(2 * i, -1) for i in range(t)], 1)
    return b


@pytest.mark.parametrize("method", ["geometric", "iw3"])
def test_warp_collate_never_syncs_with_the_host(method):
    warp = WarpSamplerConfig.level(2, closing_choices=((5, 5), (3, 5), (0, 0)))
    window = dict(real_batch(n=4, size=96), crop=torch.full((4,), 64))   # crops chosen by holes
    for batch in (real_batch(n=4, size=96), clip_batch(), window):
        c = WarpCollate(warp, CollateConfig(method=method, retries=1, min_hole_px=10 ** 6),
                        augment=True, sync_ok=False)      # the training-device path
        c(batch, step=0)                        # warm-up outside the trap
        with trap_host_syncs() as hits:
            b = c(batch, step=1)
        assert not hits, hits
        assert b.mask.any()


def test_the_trap_catches_a_sync():
    with trap_host_syncs() as hits:
        float(torch.ones(2).sum())
        torch.zeros(3).nonzero()
    assert len(hits) == 2


# ------------------------------------------------------------------ crops chosen by their holes

def test_best_crops_is_the_first_best_of_the_drawn_candidates():
    from inpaint_online.stream.collate import best_crops, crop_at
    g = torch.Generator().manual_seed(5)
    n, t, h, w, size, k = 5, 2, 40, 52, 24, 7
    mask = torch.rand(n * t, 1, h, w, generator=g) < torch.rand(n * t, 1, 1, 1, generator=g) * 0.3
    mask[:t] = False                                        # a sample with no holes at all
    oy, ox, holes = best_crops(mask, n, size, k, torch.Generator().manual_seed(9))
    ref = torch.Generator().manual_seed(9)                  # the same candidates, by loops
    cy = torch.randint(0, h - size + 1, (n, k), generator=ref)
    cx = torch.randint(0, w - size + 1, (n, k), generator=ref)
    for i in range(n):
        sums = [int(mask[i * t:(i + 1) * t, :, y:y + size, x:x + size].sum())
                for y, x in zip(cy[i].tolist(), cx[i].tolist())]
        j = sums.index(max(sums))
        assert (int(oy[i]), int(ox[i]), int(holes[i])) == (int(cy[i, j]), int(cx[i, j]), sums[j])
    x = torch.rand(n, 3, h, w, generator=g)
    got = crop_at(x, oy, ox, size)
    for i in range(n):
        assert torch.equal(got[i], x[i, :, oy[i]:oy[i] + size, ox[i]:ox[i] + size])


def test_a_window_gives_more_holes_at_the_same_draws_and_masks_made_on_the_window():
    cpu = real_batch(n=8, size=192)
    warp = WarpSamplerConfig.level(2, closing_choices=((0, 0),))
    plain = WarpCollate(warp, CollateConfig(retries=0), seed=4, augment=False)
    picky = WarpCollate(warp, CollateConfig(retries=0, crop_candidates=16), seed=4, augment=False)
    small = {k: (v[..., 48:144, 48:144] if k in ("rgb", "depth") else v) for k, v in cpu.items()}
    a = plain(small, step=0)                                 # the window's centre crop
    b = picky(dict(cpu, crop=torch.full((8,), 96)), step=0)  # the best of 16 crops of the window
    assert b.y.shape[-1] == 96
    assert int(b.mask.sum()) > 1.5 * int(a.mask.sum())
    # each sample's crop is the window's content at the chosen place, with the masks the
    # window's (so their context reaches past the crop's edges)
    from inpaint_online.warp import masks_from_params
    whole = masks_from_params((cpu["depth"].float() + DEPTH_OFFSET) / 65535, b.params)
    flip = b.params.left.view(-1, 1, 1, 1)
    whole = torch.where(flip, whole.flip(-1), whole)
    y = torch.where(flip, cpu["rgb"].flip(-1), cpu["rgb"]).float() / 255
    hits = 0
    for i in range(8):
        for oy in range(0, 97):
            for ox in range(0, 97):
                if torch.equal(y[i, :, oy:oy + 96, ox:ox + 96], b.y[i]):
                    assert torch.equal(whole[i, :, oy:oy + 96, ox:ox + 96], b.mask[i].bool())
                    hits += 1
                    break
            else:
                continue
            break
    assert hits == 8


@pytest.mark.parametrize("window", [False, True])
def test_retrying_only_the_samples_that_need_it_gives_the_same_batch(window):
    cpu = real_batch(n=8, size=128)
    if window:
        cpu["crop"] = torch.full((8,), 80)
    warp = WarpSamplerConfig.level(2, closing_choices=((5, 5), (0, 0)))
    cfg = CollateConfig(min_hole_px=400, retries=3, crop_candidates=5)
    a = WarpCollate(warp, cfg, seed=2, sync_ok=False)(cpu, step=3)    # the whole batch again
    b = WarpCollate(warp, cfg, seed=2, sync_ok=True)(cpu, step=3)     # only those with few holes
    assert 0 < int((a.mask.flatten(1).sum(1) < 400).sum()) < 8        # some did need it
    assert torch.equal(a.mask, b.mask) and torch.equal(a.y, b.y) and torch.equal(a.layered, b.layered)
    assert a.params.records() == b.params.records()

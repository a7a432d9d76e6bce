"""WarpCollate: a CPU batch of (image, depth) crops → ``(x, mask, y)`` on the training device.

Per batch, vectorised over the samples (docs/design.md, "stream" and "warp"):
the colour jitter the workers drew (:mod:`.color`) → fresh per-sample warp parameters → hole
mask at the original position (left warp of the depth, right re-warp, unreached pixels,
closing) → optional re-draw for samples with too few holes → right-view orientation
(left-view samples mirrored, iw3's convention: background to the right of every hole) →
mask augmentation → ``x = y · (1 − mask)``.

It runs in the main process (CUDA cannot live in forked workers). :class:`~.prefetch.Prefetcher`
overlaps it with the training step: pinned host memory, non-blocking copies and, on CUDA,
a side stream one batch ahead (timm's PrefetchLoader pattern).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from ..cache import DEPTH_SCALE
from ..warp import MASK_METHODS, WarpParams, WarpSampler, WarpSamplerConfig, masks_from_params
from .batch import Batch
from .color import jitter_frames
from .dataset import DEPTH_OFFSET
from .records import mix_seed

__all__ = ["CollateConfig", "WarpCollate", "widen_mask", "draw_widths", "widen_drawn", "hide_holes",
           "best_crops", "crop_at", "crop_candidates"]


@dataclass
class CollateConfig:
    """The ``collate:`` section: how masks are made from the drawn parameters."""
    method: str = "geometric"              # mask method: exact "geometric" or iw3's "iw3"
    border: str = "pad"                    # image borders: replicate-padded (no border holes)
    min_hole_px: int = 300                 # samples with fewer hole pixels are re-drawn ...
    retries: int = 1                       # ... this many times (each costs one mask pass)
    widen_bg_p: float = 0.5                # iw3's mask augmentation: widen toward background
    widen_bg_px: tuple[int, int] = (1, 20)
    widen_fg_p: float = 0.25               # ... and toward the foreground
    widen_fg_px: tuple[int, int] = (1, 4)
    with_depth: bool = False               # also hand the (masked) depth to the model
    crop_candidates: int = 8               # data.crop_window > 1: candidate crops per sample;
                                           # the one with the most hole pixels is kept

    def validate(self) -> None:
        if self.method not in MASK_METHODS:
            raise ValueError(f"collate.method must be one of {MASK_METHODS}, got {self.method!r}")
        if self.border not in ("pad", "none"):
            raise ValueError(f"collate.border must be 'pad' or 'none', got {self.border!r}")
        if self.crop_candidates < 1:
            raise ValueError(f"collate.crop_candidates must be >= 1, got {self.crop_candidates}")
        for name in ("widen_bg_px", "widen_fg_px"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"collate.{name} must be 0 <= lo <= hi, got {(lo, hi)}")


def widen_mask(mask: torch.Tensor, right: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Grow each sample's mask by ``right[i]`` pixels to the right and ``left[i]`` to the left.

    In right-view orientation the background lies right of every hole, so ``right`` widens
    toward the background. A loop over shift distances (≤ 20 in practice), never over samples.
    """
    out = mask.clone()
    b = mask.shape[0]
    for n, sign in ((right, 1), (left, -1)):
        reach = int(n.max()) if n.numel() else 0    # drawn on the CPU: no device sync
        n = n.to(mask.device).view(b, 1, 1, 1)
        for k in range(1, reach + 1):
            shifted = torch.zeros_like(mask)
            if sign > 0:
                shifted[..., k:] = mask[..., :-k]
            else:
                shifted[..., :-k] = mask[..., k:]
            out |= shifted & (n >= k)
    return out


def crop_candidates(n: int, size: int, h: int, w: int, k: int,
                    g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` random top-left corners ``(oy, ox)``, each ``(n, k)``, of ``size``-square crops
    of an ``h`` x ``w`` window, drawn on the CPU from ``g``."""
    return (torch.randint(0, h - size + 1, (n, k), generator=g),
            torch.randint(0, w - size + 1, (n, k), generator=g))


def best_crops(mask: torch.Tensor, n: int, size: int, k: int, g: torch.Generator,
               candidates: tuple[torch.Tensor, torch.Tensor] | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Of ``k`` random ``size``-square crops per sample of the masks ``(n·T, 1, H, W)``
    (a sample's T frames count together), the one with the most hole pixels.

    Returns ``(oy, ox, holes)``, each ``(n,)`` on the mask's device. Positions are drawn on
    the CPU from ``g`` (or given as ``candidates``) and scored with an integral image: no
    loop over samples, no host sync.
    """
    h, w = mask.shape[-2:]
    dev = mask.device
    cy, cx = candidates if candidates is not None else crop_candidates(n, size, h, w, k, g)
    counts = mask.reshape(n, -1, h, w).sum(1, dtype=torch.int32)
    ii = F.pad(counts.cumsum(1, dtype=torch.int32).cumsum(2, dtype=torch.int32), (1, 0, 1, 0))
    oy, ox = cy.to(dev), cx.to(dev)
    b = torch.arange(n, device=dev).view(n, 1)
    score = (ii[b, oy + size, ox + size] - ii[b, oy, ox + size]
             - ii[b, oy + size, ox] + ii[b, oy, ox])
    j = score.argmax(1, keepdim=True)                    # ties: the first drawn
    return oy.gather(1, j)[:, 0], ox.gather(1, j)[:, 0], score.gather(1, j)[:, 0]


def crop_at(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, size: int) -> torch.Tensor:
    """``x[i, :, oy[i]:oy[i]+size, ox[i]:ox[i]+size]`` for every ``i`` of ``(N, C, H, W)``,
    with device-side offsets (two gathers, no sync)."""
    n, c, h, w = x.shape
    r = torch.arange(size, device=x.device)
    rows = (oy.view(n, 1) + r).view(n, 1, size, 1).expand(n, c, size, w)
    x = x.gather(2, rows)
    cols = (ox.view(n, 1) + r).view(n, 1, 1, size).expand(n, c, size, size)
    return x.gather(3, cols)


def _per_frame(p: WarpParams, t: int) -> WarpParams:
    """Each sample's parameters repeated for its ``t`` frames."""
    return p if t == 1 else p.map(lambda v: v.repeat_interleave(t))


def _merge(a: WarpParams, b: WarpParams, take_b: torch.Tensor) -> WarpParams:
    kw = {}
    for f in fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if f.name in ("shift_bound", "dilation_bound"):
            kw[f.name] = max(va, vb)
        else:
            kw[f.name] = torch.where(take_b, vb, va) if isinstance(va, torch.Tensor) else va
    return WarpParams(**kw)


def _crop_size(batch: dict, window: int) -> int:
    """The final crop side the dataset asked for (a CPU tensor of the batch: no device sync)."""
    return int(batch["crop"].view(-1)[0]) if "crop" in batch else window


def _crop_box(box: torch.Tensor, flip, oy: torch.Tensor, ox: torch.Tensor, size: int,
              win: int) -> torch.Tensor:
    """The crop's box in cached-depth pixels from its window's box (the dataset may have
    mirrored the window: then the offset counts from the right)."""
    box = box.to(oy.device).float()
    px = (box[:, 2] - box[:, 0]) / win
    if flip is not None:
        ox = torch.where(flip.to(ox.device).bool(), win - size - ox, ox)
    x0 = box[:, 0] + ox * px
    y0 = box[:, 1] + oy * px
    return torch.stack([x0, y0, x0 + size * px, y0 + size * px], 1)


class WarpCollate:
    """Turns a CPU batch from :class:`~.dataset.CacheDataset` into a :class:`Batch`.

    ``collate(batch, step)``: the warp parameters come from a generator seeded by
    ``(seed, rank, step)``, so every rank draws different parameters, every step new ones,
    and a resumed run the same ones as an uninterrupted run.
    """

    def __init__(self, warp: WarpSamplerConfig | None = None, config: CollateConfig | None = None,
                 *, device: str | torch.device = "cpu", seed: int = 0, rank: int = 0,
                 augment: bool = True, sync_ok: bool | None = None):
        self.sampler = WarpSampler(warp or WarpSamplerConfig())
        self.cfg = config or CollateConfig()
        self.cfg.validate()
        self.device = torch.device(device)
        self.seed, self.rank, self.augment = seed, rank, augment
        # may the collate read device values (skip work on samples that need none)? Free
        # on the CPU; on CUDA it would stall the side stream, so off unless asked for
        self.sync_ok = self.device.type == "cpu" if sync_ok is None else sync_ok

    def generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(mix_seed(self.seed, "warp", self.rank, step))

    def __call__(self, batch: dict, step: int) -> Batch:
        """Images ``rgb (B, 3, H, W)`` → 4-D batch; clips ``rgb (B, T, 3, H, W)`` → 5-D batch
        whose T frames share one draw of warp parameters, orientation and mask widening (the
        masks move with the content, as in a converted video)."""
        c, dev, g = self.cfg, self.device, self.generator(step)
        nb = dev.type == "cuda"
        clip = batch["rgb"].dim() == 5
        n = batch["rgb"].shape[0]
        t = batch["rgb"].shape[1] if clip else 1
        y = batch["rgb"].to(dev, non_blocking=nb).flatten(0, 1 if clip else 0).float().div_(255.0)
        depth = (batch["depth"].to(dev, non_blocking=nb).flatten(0, 1 if clip else 0).float()
                 + DEPTH_OFFSET).div_(float(DEPTH_SCALE))
        if self.augment and "jitter" in batch:
            y = jitter_frames(y, batch["jitter"], t, self.sync_ok)
        win = y.shape[-1]
        size = _crop_size(batch, win)
        params = self.sampler.sample(n, batch["width"], g).to(dev)
        mask, layered, oy, ox, holes = self._masks(depth, params, n, t, size, g)
        for _ in range(c.retries):
            # re-draw for samples with too few holes (per frame on average), keeping the
            # better draw. On the training device the whole batch is re-made (no host sync);
            # where a sync is free (``sync_ok``: CPU, export) only the samples that need it,
            # with the same draws, so both give the same batch.
            p2 = self.sampler.sample(n, batch["width"], g).to(dev)
            need = holes < c.min_hole_px * t
            if self.sync_ok:
                idx = need.nonzero()[:, 0]
                cand = self._candidates(n, size, depth.shape[-2:], g)
                if idx.numel() == 0:
                    params = _merge(params, p2, need)       # as the full path: no change
                    continue
                f = (idx.view(-1, 1) * t + torch.arange(t, device=dev)).flatten()
                m_s, l_s, oy_s, ox_s, h_s = self._masks(
                    depth[f], p2.map(lambda v: v[idx]), len(idx), t, size, g,
                    None if cand is None else (cand[0][idx.cpu()], cand[1][idx.cpu()]))
                m2, l2 = mask.clone(), layered.clone()
                m2[f], l2[f] = m_s, l_s
                oy2, ox2, holes2 = oy.clone(), ox.clone(), holes.clone()
                oy2[idx], ox2[idx], holes2[idx] = oy_s, ox_s, h_s
            else:
                m2, l2, oy2, ox2, holes2 = self._masks(depth, p2, n, t, size, g)
            redo = need & (holes2 > holes)                  # only ever for the better
            per_frame = redo.repeat_interleave(t).view(-1, 1, 1, 1)
            mask = torch.where(per_frame, m2, mask)
            layered = torch.where(per_frame, l2, layered)
            oy, ox = torch.where(redo, oy2, oy), torch.where(redo, ox2, ox)
            holes = torch.where(redo, holes2, holes)
            params = _merge(params, p2, redo)
        meta = {k: batch[k] for k in ("index", "seed", "box", "flip", "frames") if k in batch}
        if size < win:
            # the masks were made on the whole window (their context is right at the crop's
            # edges); image, depth and masks are cut to the crop with the most holes
            oyf, oxf = oy.repeat_interleave(t), ox.repeat_interleave(t)
            y, depth = crop_at(y, oyf, oxf, size), crop_at(depth, oyf, oxf, size)
            mask = crop_at(mask.to(torch.uint8), oyf, oxf, size).bool()
            layered = crop_at(layered.to(torch.uint8), oyf, oxf, size).bool()
            if "box" in meta:
                meta["window_box"] = meta["box"]
                meta["box"] = _crop_box(meta["box"], meta.get("flip"), oy, ox, size, win)
        flip = params.left.repeat_interleave(t).view(-1, 1, 1, 1)
        y, depth, mask = (torch.where(flip, v.flip(-1), v) for v in (y, depth, mask))
        if self.augment:
            mask = widen_drawn(mask, c, n, t, g)
        x, m, y, depth = hide_holes(y, mask, depth, n, t, clip)
        return Batch(x=x, mask=m, y=y, depth=depth, params=params, meta=meta,
                     layered=layered.reshape(n, -1).sum(1))

    def _candidates(self, n: int, size: int, hw, g: torch.Generator):
        if size >= hw[-1]:
            return None
        return crop_candidates(n, size, hw[0], hw[1], self.cfg.crop_candidates, g)

    def _masks(self, depth: torch.Tensor, params: WarpParams, n: int, t: int, size: int,
               g: torch.Generator, candidates=None):
        """Masks of the whole window, the best crop's offsets and its hole count."""
        c = self.cfg
        mask, layered = masks_from_params(depth, _per_frame(params, t), method=c.method,
                                          border=c.border, return_layered=True)
        if size < depth.shape[-1]:
            if candidates is None:
                candidates = self._candidates(n, size, depth.shape[-2:], g)
            oy, ox, holes = best_crops(mask, n, size, c.crop_candidates, g, candidates)
        else:
            oy = ox = torch.zeros(n, dtype=torch.long, device=depth.device)
            holes = mask.reshape(n, -1).sum(1)
        return mask, layered, oy, ox, holes


def widen_drawn(mask: torch.Tensor, c: CollateConfig, n: int, t: int,
                g: torch.Generator) -> torch.Tensor:
    """iw3's mask widening (``collate.widen_*``) of ``n`` samples' ``t`` frames each
    ``(n*t, 1, H, W)``: one draw per sample, shared by its frames."""
    bg = draw_widths(n, c.widen_bg_p, c.widen_bg_px, g).repeat_interleave(t)
    fg = draw_widths(n, c.widen_fg_p, c.widen_fg_px, g).repeat_interleave(t)
    return widen_mask(mask, bg, fg)


def hide_holes(y: torch.Tensor, mask: torch.Tensor, depth: torch.Tensor, n: int, t: int,
               clip: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch's tensors from its frames ``(n*t, C, H, W)``: ``x = y · (1 − mask)``, the float
    mask, ``y`` and the depth with its holes zeroed (what inference knows); clips back to
    ``(n, t, C, H, W)``."""
    m = mask.float()
    keep = 1.0 - m
    x, depth = y * keep, depth * keep
    if clip:
        x, m, y, depth = (v.unflatten(0, (n, t)) for v in (x, m, y, depth))
    return x, m, y, depth


def draw_widths(n: int, p: float, rng: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """``(n,)`` widths of iw3's mask widening: with probability ``p`` a width drawn uniformly
    from ``rng`` (inclusive), else 0; drawn on the CPU from ``g``."""
    on = torch.rand(n, generator=g) < p
    k = torch.randint(rng[0], rng[1] + 1, (n,), generator=g)
    return torch.where(on, k, 0)

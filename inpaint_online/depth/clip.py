"""Depth maps at the stored size: resizing with per-map or per-clip normalisation, and the
range a clip's frames share (used by the cache filler and by ``stereo --video``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .base import normalise, single_threaded

__all__ = ["CLIP_PERCENTILES", "clip_span", "resize_normalised"]

CLIP_PERCENTILES = (0.5, 99.5)


def resize_normalised(depth: np.ndarray, w: int, h: int,
                      span: tuple[float, float] | None = None) -> np.ndarray:
    """``(N, h0, w0)`` → ``(N, h, w)``, bilinear (antialiased when shrinking), then into
    [0, 1]: min-max per map (``span=None``), or by one ``(lo, hi)`` shared by the maps of a
    clip (clamped: the percentiles leave the extreme 0.5 % outside)."""
    t = torch.from_numpy(np.asarray(depth, np.float32))[:, None]
    if t.shape[-2:] != (h, w):
        with single_threaded():     # the same units however the work was split
            t = F.interpolate(t, (h, w), mode="bilinear", align_corners=False,
                              antialias=h < t.shape[-2] or w < t.shape[-1])
    if span is None:
        # normalise again at the stored size, so every cached map spans exactly [0, 65535]
        return normalise(t[:, 0]).numpy()
    lo, hi = span
    return ((t[:, 0] - lo) / max(hi - lo, 1e-12)).clamp(0, 1).numpy()


def clip_span(raw: np.ndarray) -> tuple[float, float]:
    """The range a clip's frames share: robust percentiles (:data:`CLIP_PERCENTILES`) of all
    their raw values (at the model's resolution). A flat clip gets a unit range."""
    v = np.asarray(raw, np.float32).ravel()
    if v.size > 4_000_000:                      # a strided sample is plenty for percentiles
        v = v[:: v.size // 2_000_000]
    lo, hi = (float(x) for x in np.percentile(v, CLIP_PERCENTILES))
    if not hi > lo:
        lo, hi = float(v.min()), float(v.min()) + 1.0
    return lo, hi

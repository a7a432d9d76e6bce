"""Foreground edge dilation of depth, per sample, as iw3's ``edge_dilation`` (docs/iw3.md).

iw3's converter grows the near side of depth edges by a few pixels before warping (its
``--edge-dilation``, on by default), so an object's fringe moves with the object and the
holes open a little farther out; its training data generator draws that option per image
(0–4 px). Training holes drawn the same way sit where iw3's inference puts them.

One iteration, on inverse depth (1 = near): a per-sample edge weight ``w`` (the 3x3
max − min range, standardised over the image, clipped to ±3σ and scaled to [0, 1]); a 3x3
blur then a 3x3 max of the depth; ``d ← d·(1 − w) + max·w``. Sample ``i`` gets ``n[i]``
iterations: a loop over ``max(n)`` (known on the host when the parameters are drawn), a
``where`` per sample — no host sync, no loop over samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["edge_weight", "dilate_edges"]

_BLUR = torch.tensor([[21, 31, 21], [31, 48, 31], [21, 31, 21]], dtype=torch.float32) / 256.0


def edge_weight(d: torch.Tensor) -> torch.Tensor:
    """Where ``d`` ``(B, 1, H, W)`` has edges, in [0, 1] per sample."""
    hi = F.max_pool2d(d, 3, 1, 1)
    lo = -F.max_pool2d(-d, 3, 1, 1)
    r = hi - lo
    r = r - r.mean(dim=(1, 2, 3), keepdim=True)
    sd = r.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
    w = (r / (sd + 1e-6)).clamp(-3, 3)
    w_lo, w_hi = w.amin(dim=(1, 2, 3), keepdim=True), w.amax(dim=(1, 2, 3), keepdim=True)
    return (w - w_lo) / ((w_hi - w_lo) + 1e-6)


def dilate_edges(depth: torch.Tensor, n: torch.Tensor, bound: int) -> torch.Tensor:
    """``depth`` ``(B, 1, H, W)`` (inverse depth) with sample ``i``'s near side grown by
    ``n[i]`` iterations; ``bound`` >= max(n), read on the host."""
    if bound <= 0:
        return depth
    n = n.to(depth.device).view(-1, 1, 1, 1)
    k = _BLUR.to(depth.device, depth.dtype).view(1, 1, 3, 3)
    x = depth
    for i in range(1, bound + 1):
        w = edge_weight(x)
        grown = F.max_pool2d(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k), 3, 1, 1)
        x = torch.where(n >= i, x * (1 - w) + grown * w, x)
    return x

"""Disocclusion masks at the original image position: ``occlusion_mask`` and its two methods.

The mask of the *right*-view case marks the pixels of the input image that the left view
cannot see: they are the holes a converter has to fill when it renders the input as the
right eye. The left-view case is the exact mirror image (flip, compute, flip back), so both
methods below are written once, for the right view.

``method="geometric"`` (default) — exact occlusion of a piecewise-linear surface.
    Source pixel ``x`` lands at ``p(x) = x + s(x)`` in the left view. Neighbours whose
    shifts differ by less than 1 px are one surface and each covers up to the midpoint of
    their landing positions; across a jump of >= 1 px each covers half a pixel on that side.
    ``x`` is a hole iff ``p(x)`` lies in the footprint ``[L(y), R(y))`` of a nearer pixel.
    Any pixel whose footprint covers ``p(x)`` from the left (``y < x``) is nearer and none
    from the right is, so the test looks at the ``K`` pixels left of ``x`` only, where
    ``K = ceil(max s - min s) + 1`` bounds how far an occluder can be (a footprint lies
    within ``p(y) ± 1``). Background seen through a gap in a thin near layer stays visible.
    The slow literal version is :func:`inpaint_online.warp.reference.reference_geometric_mask`.

``method="iw3"`` — the masks of iw3's ``nonwarp_mask`` (nunif ``iw3/forward_warp.py``),
    right view, rebuilt with scans instead of its loops: (1) bilinear splat of the depth and
    of the source column index to the left view — floor and ceil winners (depth order) kept
    separately and always blended; index holes filled from the left, pixels whose index
    exceeds the running minimum to their right invalidated, then depth holes filled from the
    left; (2) splat of the column index back to the right; index holes filled from the
    right; a pixel whose index is below the running maximum to its left is a *layered hole*
    (background seen through a gap in a nearer layer, 0.5 in iw3's float mask); unreached
    pixels are plain holes. iw3's trainer reads ``> 0`` as hole, so both are ``True`` here;
    ``return_layered=True`` gives the layered class apart. Differences from iw3, none of
    which changes a mask in practice: iw3 stops its fill and layered loops after 100 passes
    (runs wider than 100 px; our per-eye shifts are capped far below), and its
    ``view="left"`` keeps the right-view hole side (only its scan directions change), where
    ours is the mirror image as for every method here.

Both are batched with per-sample parameters and views, contain no host sync when
``max_shift`` is given, and compile with ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .morph import close_mask
from .shift import (
    SHIFT_PER_PERCENT,
    Param,
    View,
    check_depth,
    disparity_shift,
    iw3_shift_scale,
    per_sample,
    view_sign,
)

__all__ = ["MASK_METHODS", "occlusion_mask", "shift_bounds"]

MASK_METHODS = ("geometric", "iw3")


def shift_bounds(divergence: Param, convergence: Param, width: Param,
                 max_shift: float | None) -> tuple[float, float]:
    """Host bounds ``(max |s|, max s - min s)`` over a batch, for depth in ``[0, 1]``.

    With ``max_shift`` the bounds follow from it alone (``max_shift``, ``2 * max_shift``) and
    no tensor is read, so nothing syncs; without it they are computed from the parameters
    (one device sync when those are CUDA tensors).
    """
    if max_shift is not None:
        return float(max_shift), 2.0 * float(max_shift)

    def host(v):
        return v.detach().double().cpu().view(-1) if isinstance(v, torch.Tensor) \
            else torch.tensor([float(v)], dtype=torch.float64)

    div, conv, wid = torch.broadcast_tensors(host(divergence), host(convergence), host(width))
    k = (div * wid * SHIFT_PER_PERCENT).abs()
    hi, lo = (1.0 - conv) * k, -conv * k          # s at d = 1 and at d = 0
    return float(torch.maximum(hi.abs(), lo.abs()).max()), float((hi - lo).abs().max())


def _to_right(t: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Mirror the left-view samples (``left``: ``(B, 1, 1, 1)`` bool); an involution."""
    return torch.where(left, t.flip(-1), t)


# ----------------------------------------------------------------------------- geometric

def _geometric_right(shift: torch.Tensor, window: int, border: str) -> torch.Tensor:
    """Right-view holes of :data:`method="geometric"`; ``shift`` ``(B, 1, H, W)``."""
    b, _, h, w = shift.shape
    k = window
    if k <= 0:
        return torch.zeros_like(shift, dtype=torch.bool)
    # k columns left of the image: the edge replicated, or (border="none") nothing, which
    # an infinite shift stands for (its footprint lies at +inf and covers no point)
    if border == "pad":
        sp = F.pad(shift, (k, 0, 0, 0), mode="replicate")
    else:
        sp = F.pad(shift, (k, 0, 0, 0), value=math.inf)
    x = torch.arange(-k, w, device=shift.device, dtype=torch.float32)
    p = x + sp
    same = (sp[..., 1:] - sp[..., :-1]).abs() < 1.0          # NaN (inf - inf) counts as a jump
    mid = (p[..., 1:] + p[..., :-1]) * 0.5
    # footprint [lo, hi) of every column; the last one's right side is half a pixel (the
    # replicated column beyond it has the same shift, or there is none)
    hi = torch.cat([torch.where(same, mid, p[..., :-1] + 0.5), p[..., -1:] + 0.5], -1)
    lo = torch.cat([p[..., :1] - 0.5, torch.where(same, mid, p[..., 1:] - 0.5)], -1)
    q = p[..., k:]                                             # landing points of the image
    # the k columns left of each pixel, one offset at a time: a static loop over window
    # taps, measured 2.5-4x faster on the CPU than one unfold() over all taps (k = 11..65,
    # 8x384^2), which materialises k booleans per pixel
    hidden = torch.zeros_like(q, dtype=torch.bool)
    for j in range(1, k + 1):
        hidden |= (lo[..., k - j:k - j + w] <= q) & (q < hi[..., k - j:k - j + w])
    if border == "none":
        # landing outside the left view's frame: not visible there either
        hidden = hidden | (q < -0.5) | (q >= w - 0.5)
    return hidden


# ----------------------------------------------------------------------------- iw3

def _iw3_splat(values: torch.Tensor, shift: torch.Tensor, left: bool) -> torch.Tensor:
    """iw3's bilinear z-buffered splat of ``values`` ``(B, C, H, W)``; holes are ``-1``.

    Every source splats to ``floor`` and ``ceil`` of its clamped target with weights
    ``1 - f`` and ``f`` (``f`` clamped to ``[1e-5, 1 - 1e-5]``; ``floor == ceil`` on integer
    targets). Per target the nearest floor splat and the nearest ceil splat win and are
    blended by weight. Depth order is column order here (docs/design.md; see
    :func:`inpaint_online.warp.splat._winner`): the left view keeps the smallest source column,
    the right view the largest, so each z-buffer is one ``scatter_reduce(amax)``.
    """
    b, c, h, w = values.shape
    x = torch.arange(w, device=values.device, dtype=torch.float32)
    t = (x + shift if left else x - shift).clamp(0.0, w - 1.0)
    tf, tc = t.floor(), t.ceil()
    wc = (t - tf).clamp(1e-5, 1.0 - 1e-5)
    wf = 1.0 - wc
    # sentinel columns at both ends hold iw3's "undefined" (value -1, weight 0), so the
    # winner's column can be gathered without masking: priority 0 = nobody reached it
    col = torch.arange(1, w + 1, device=values.device).view(1, 1, 1, w)
    prio = (w + 1 - col if left else col).expand(b, 1, h, w)
    undefined = torch.full((b, c, h, 1), -1.0, device=values.device)
    vals = torch.cat([undefined, values, undefined], 3)
    zero = torch.zeros((b, 1, h, 1), device=values.device)
    num = den = None
    for target, weight in ((tf, wf), (tc, wc)):
        win = torch.zeros((b, 1, h, w), dtype=torch.long, device=values.device)
        win.scatter_reduce_(3, target.long(), prio, reduce="amax")
        src = w + 1 - win if left else win
        wt = torch.cat([zero, weight, zero], 3).gather(3, src)
        v = vals.gather(3, src.expand(b, c, h, w))
        num = v * wt if num is None else num.addcmul_(v, wt)
        den = wt if den is None else den + wt
    return torch.where(den > 0, num / den, -1.0)     # iw3: nan_to_num(0 / 0, -1)


def _fill(v: torch.Tensor, from_left: bool) -> torch.Tensor:
    """Negative pixels take the nearest non-negative value on one side (0 if none), as
    iw3's repeated one-pixel ``shift_fill`` does when it runs to the end."""
    b, c, h, w = v.shape
    # a 0 column outside the row plays iw3's zero padding: it is the source when none is found
    zero = torch.zeros((b, c, h, 1), device=v.device, dtype=v.dtype)
    x = torch.arange(1, w + 1, device=v.device, dtype=torch.int32).view(1, 1, 1, w)
    # arithmetic instead of where(): inductor's CPU codegen (torch 2.14) cannot mix an
    # int32 select with a float comparison mask
    ok = (v >= 0).to(torch.int32)
    if from_left:
        src = (x * ok).cummax(3).values
        return torch.cat([zero, v], 3).gather(3, src.long())
    src = (w + (x - 1 - w) * ok).flip(3).cummin(3).values.flip(3)
    return torch.cat([v, zero], 3).gather(3, src.long())


def _iw3_right(depth: torch.Tensor, divergence: Param, convergence: Param, width: Param,
               pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-view ``(mask, layered)`` of iw3's ``nonwarp_mask``; ``depth`` ``(B, 1, H, W)``."""
    b, _, h, w = depth.shape
    dev = depth.device
    # iw3: shift = d * k - k * conv, with k in iw3's order of operations (Python floats there)
    k = iw3_shift_scale(per_sample(divergence, b, dev, "divergence").double(),
                        per_sample(width, b, dev, "width").double())
    kc = (k * per_sample(convergence, b, dev, "convergence").double()).float()
    k = k.float()
    wp = w + 2 * pad
    index = torch.arange(wp, device=dev, dtype=torch.float32).view(1, 1, 1, wp).expand(b, 1, h, wp)

    # step 1: depth and column index to the left view
    dp = F.pad(depth, (pad, pad, 0, 0), mode="replicate")
    out = _iw3_splat(torch.cat([dp, index], 1), dp * k - kc, left=True)[..., pad:pad + w]
    warped, idx = out[:, :1], _fill(out[:, 1:], from_left=True)
    suffix_min = idx.flip(3).cummin(3).values.flip(3)
    layered = idx > F.pad(suffix_min[..., 1:], (0, 1), value=math.inf)
    warped = _fill(torch.where(layered, -2.0, warped), from_left=True)
    warped = warped * 3.0 / 3.0     # iw3 warps 3 copies of the depth and takes their mean

    # step 2: the column index back to the right; unreached = hole, out of order = layered
    dp = F.pad(warped, (pad, pad, 0, 0), mode="replicate")
    idx = _iw3_splat(index, dp * k - kc, left=False)[..., pad:pad + w]
    hole = idx < 0
    idx = _fill(idx, from_left=False)
    prefix_max = idx.cummax(3).values
    layered = idx < F.pad(prefix_max[..., :-1], (1, 0), value=-math.inf)
    return hole | layered, layered


# ----------------------------------------------------------------------------- API

def occlusion_mask(depth: torch.Tensor, divergence: Param, convergence: Param,
                   view: View = "right", closing: int | tuple[int, int] | None = (5, 5), *,
                   method: str = "geometric", width: Param | None = None, border: str = "pad",
                   max_shift: float | None = None, check: bool = True,
                   return_layered: bool = False):
    """Disocclusion mask at the *original* image position (the seed's steps 1-4).

    Right-view case: the pixels of the input that the left view cannot see — the holes a
    converter must fill when the input becomes the right eye. They lie on the background
    side of each foreground edge (foreground to their left), about as wide as the disparity
    jump. The left-view case is the exact mirror image.

    Args:
        depth: ``(B, 1, H, W)`` inverse depth in ``[0, 1]`` (1 = near).
        divergence, convergence, view, width, check: as :func:`~inpaint_online.warp.forward_warp`.
        closing: ``(kh, kw)`` or odd int kernel for :func:`~inpaint_online.warp.close_mask`;
            ``None`` = no closing.
        method: ``"geometric"`` (exact occlusion, the default) or ``"iw3"`` (iw3's masks,
            layered holes included); see the module docstring.
        border: ``"pad"`` extends the depth by edge replication, so the image border makes
            no holes (constant depth → empty mask); ``"none"`` (geometric only) also marks
            the band whose pixels land outside the other view's frame.
        max_shift: clamp the per-eye shift to ``±max_shift`` px. Giving it also bounds the
            work (padding, occluder window) without reading the parameters: no host sync.
        return_layered: also return the layered-hole class (iw3; all ``False`` for
            ``geometric``, whose holes are all plain occlusions).

    Returns:
        bool ``(B, 1, H, W)``, ``True`` = hole; with ``return_layered`` ``(mask, layered)``.
        Closing applies to the mask, not to the layered class.

    Example:
        >>> d = torch.rand(2, 1, 32, 48)
        >>> m = occlusion_mask(d, torch.tensor([2.0, 4.0]), 0.5, ["right", "left"])
    """
    depth = check_depth(depth, check)
    b, _, h, w = depth.shape
    if method not in MASK_METHODS:
        raise ValueError(f"method must be one of {MASK_METHODS}, got {method!r}")
    if border not in ("pad", "none"):
        raise ValueError(f"border must be 'pad' or 'none', got {border!r}")
    if method == "iw3" and border != "pad":
        raise ValueError("method='iw3' pads the border by replication as iw3 does; "
                         "border='none' exists for method='geometric' only")
    left = view_sign(view, b, depth.device) > 0
    if width is None:
        width = float(w)
    max_abs, span = shift_bounds(divergence, convergence, width, max_shift)
    depth = _to_right(depth, left)
    if method == "geometric":
        shift = disparity_shift(depth, divergence, convergence, width, max_shift)
        mask = _geometric_right(shift, min(math.ceil(span) + 1, w + 1), border)
        layered = torch.zeros_like(mask)
    else:
        if max_shift is not None:
            depth = _shift_capped(depth, divergence, convergence, width, max_shift)
        mask, layered = _iw3_right(depth, divergence, convergence, width,
                                   min(math.ceil(max_abs) + 2, 4 * w))
    mask, layered = _to_right(mask, left), _to_right(layered, left)
    if closing is not None:
        mask = close_mask(mask, closing)
    return (mask, layered) if return_layered else mask


def _shift_capped(depth, divergence, convergence, width, max_shift):
    """Depth clamped so that iw3's shift formula stays within ``±max_shift`` (iw3 has no
    cap; its generator caps the divergence instead, as :class:`WarpSampler` does)."""
    b = depth.shape[0]
    dev = depth.device
    k = (per_sample(divergence, b, dev, "divergence") * SHIFT_PER_PERCENT
         * per_sample(width, b, dev, "width")).clamp(min=1e-12)
    conv = per_sample(convergence, b, dev, "convergence")
    return torch.minimum(torch.maximum(depth, conv - max_shift / k), conv + max_shift / k)

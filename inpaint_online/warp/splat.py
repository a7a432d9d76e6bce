"""Batched forward warping (splatting) with a z-buffer, and the background-side fill
(docs/design.md, "warp"; the conventions are in :mod:`.shift`).

Forward warp = splatting: source pixel ``x`` moves to ``x ± s(x)``; when several land on one
target the nearest (largest ``d``) wins; targets nobody reaches are holes. Everything is
vectorised over the batch with per-sample parameters; nothing in here calls ``.item()`` or
otherwise syncs with the host, except the optional value check (``check=True``).
"""

from __future__ import annotations

import torch

from .shift import Param, View, check_depth, disparity_shift, view_sign

__all__ = ["forward_warp", "fill_from_background", "SAME_SURFACE_PX"]

# Two splats landing on one target whose shifts differ by less than this many pixels belong
# to the same surface and are blended; otherwise the nearer one hides the other.
SAME_SURFACE_PX = 1.0


def _splats(shift: torch.Tensor, sign: torch.Tensor, mode: str):
    """Integer targets (as float) and weights of every source pixel: [(target, weight), ...].

    Splats of zero weight get target -1 (off the image), so they neither win nor reach.
    """
    w = shift.shape[-1]
    x = torch.arange(w, device=shift.device, dtype=torch.float32)
    if mode == "nearest":
        # round the *shift*, half away from zero, so that a warp to one eye and back to
        # the other is exact (rounding x + s half-to-even would crack constant shifts)
        r = torch.sign(shift) * torch.floor(shift.abs() + 0.5)
        return [(x + sign * r, None)]
    t = x + sign * shift
    if mode == "bilinear":
        tf = torch.floor(t)
        frac = t - tf
        return [(tf, 1.0 - frac), (torch.where(frac > 0, tf + 1.0, -1.0), frac)]
    raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")


def _padded_targets(target: torch.Tensor) -> torch.Tensor:
    """Target column + 1 in a row buffer of width ``W + 2``: splats off the image land in
    the two spare columns, so no boolean indexing (and no host sync) is needed."""
    w = target.shape[-1]
    return target.clamp(-1.0, float(w)).long().add_(1)


def _winner(target: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Source column that wins each target (``-1`` = nobody reached it).

    Depth order without depth: in a horizontal warp whose shift grows with ``d``, two
    sources meeting on one target are ordered by their columns (docs/design.md): the right
    view keeps the largest source column, the left view the smallest. So the z-buffer is a
    single ``scatter_reduce(amax)`` along each row over a column priority (``x`` for the
    right view, ``-x`` for the left one).
    """
    b, _, h, w = target.shape
    x = torch.arange(w, device=target.device).view(1, 1, 1, w)
    prio = torch.where(left, -x, x).expand(b, 1, h, w)
    buf = torch.full((b, 1, h, w + 2), -w, dtype=torch.long, device=target.device)
    buf.scatter_reduce_(3, _padded_targets(target), prio, reduce="amax")
    win = buf[..., 1:w + 1]
    return torch.where(win == -w, -1, win.abs())


def _gather_cols(values: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``values[b, c, y, cols[b, 0, y, x]]`` for non-negative ``cols``."""
    b, c, h, w = values.shape
    return values.gather(3, cols.expand(b, c, h, w))


def fill_from_background(values: torch.Tensor, hole: torch.Tensor,
                         key: torch.Tensor) -> torch.Tensor:
    """Fill each hole from the nearest non-hole pixel on the *background* side of its row.

    The background side is the neighbour (nearest valid pixel to the left or to the right)
    with the smaller ``key`` (inverse depth). Rows with no valid pixel stay as they are.

    Args:
        values: ``(B, C, H, W)`` to fill.
        hole: ``(B, 1, H, W)`` bool.
        key: ``(B, 1, H, W)`` inverse depth at each pixel (read only where not a hole).
    """
    w = values.shape[-1]
    x = torch.arange(w, device=values.device, dtype=torch.int32).view(1, 1, 1, w)
    # nearest valid column to the left / right: running max / min of the valid columns
    # (int32 scans measured 2-3x faster than int64 on CPU)
    left_src = torch.where(hole, -1, x).cummax(dim=3).values
    right_src = torch.where(hole, w, x).flip(3).cummin(dim=3).values.flip(3)
    has_l, has_r = left_src >= 0, right_src < w
    left_src = left_src.clamp_(min=0).long()
    right_src = right_src.clamp_(max=w - 1).long()
    use_right = has_r & (~has_l | (key.gather(3, right_src) < key.gather(3, left_src)))
    src = torch.where(use_right, right_src, left_src)
    filled = _gather_cols(values, src)
    return torch.where(has_l | has_r, filled, values)


def _splat_warp(shift: torch.Tensor, sign: torch.Tensor, depth: torch.Tensor, mode: str,
                image: torch.Tensor | None = None):
    """Z-buffered splat of ``depth`` (and ``image``) by ``shift``.

    Returns ``(warped_depth, warped_image_or_None, hole)``.
    """
    left = sign > 0
    splats = _splats(shift, sign, mode)
    if mode == "nearest":
        src = _winner(splats[0][0], left)
        hole = src < 0
        src = src.clamp_(min=0)
        wd = depth.gather(3, src)
        wi = None if image is None else _gather_cols(image, src)
        return wd, wi, hole
    (tf, wf), (tc, wc) = splats
    src_f, src_c = _winner(tf, left), _winner(tc, left)
    has_f, has_c = src_f >= 0, src_c >= 0
    src_f, src_c = src_f.clamp_(min=0), src_c.clamp_(min=0)
    # weight of each winner's splat on this target (0 where there is no winner)
    w_f = torch.where(has_f, wf.gather(3, src_f), 0.0)
    w_c = torch.where(has_c, wc.gather(3, src_c), 0.0)
    d_f, d_c = depth.gather(3, src_f), depth.gather(3, src_c)
    same = (shift.gather(3, src_f) - shift.gather(3, src_c)).abs() < SAME_SURFACE_PX
    # different surfaces: the nearer one hides the other if it covers at least half of
    # the target pixel, else the farther one shows (so edges land where rounding puts them)
    f_shows = (d_f >= d_c) == (torch.where(d_f >= d_c, w_f, w_c) >= 0.5)
    w_f = torch.where(has_c & ~same & ~f_shows, 0.0, w_f)
    w_c = torch.where(has_f & ~same & f_shows, 0.0, w_c)
    norm = w_f + w_c
    hole = norm <= 0
    inv = torch.where(hole, 0.0, 1.0 / norm.clamp(min=1e-12))
    w_f, w_c = w_f * inv, w_c * inv
    wd = d_f * w_f + d_c * w_c
    wi = None
    if image is not None:
        wi = _gather_cols(image, src_f) * w_f + _gather_cols(image, src_c) * w_c
    return wd, wi, hole


def forward_warp(image: torch.Tensor, depth: torch.Tensor, divergence: Param,
                 convergence: Param, view: View, *, width: Param | None = None,
                 mode: str = "bilinear", fill: str | None = None,
                 max_shift: float | None = None,
                 check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-warp (splat) ``image`` to the left or right view by its ``depth``.

    Args:
        image: ``(B, C, H, W)`` float tensor.
        depth: ``(B, 1, H, W)`` inverse depth in ``[0, 1]`` (larger = nearer), same ``H, W``.
        divergence: stereo strength in % of ``width`` (float or ``(B,)``).
        convergence: screen-plane depth in ``[0, 1]`` (float or ``(B,)``).
        view: ``"left"`` (content moves by ``+s``), ``"right"`` (by ``-s``), or per sample.
        width: full frame width in pixels that the shift is measured in (default ``W``).
        mode: ``"nearest"`` (each source to one pixel) or ``"bilinear"`` (each source to
            ``floor`` and ``floor + 1`` with linear weights; removes the 1-px cracks a
            stretched surface leaves in nearest mode). Per target the nearest splat wins;
            the floor and ceil winners are blended when they lie on the same surface
            (shifts within ``SAME_SURFACE_PX``); otherwise the nearer one hides the other
            where its splat weight is at least 0.5.
        fill: ``None`` leaves holes at 0; ``"background"`` fills them from the background
            side of each row (:func:`fill_from_background`).
        max_shift: clamp the shift to ``±max_shift`` pixels.
        check: validate depth values (one host sync); ``False`` clamps them to ``[0, 1]``
            and maps NaN to 0 instead.

    Returns:
        ``(warped, hole)``: ``(B, C, H, W)`` and a bool ``(B, 1, H, W)`` of the targets no
        source reached (before any fill).

    Example:
        >>> img, d = torch.rand(2, 3, 32, 48), torch.rand(2, 1, 32, 48)
        >>> right, hole = forward_warp(img, d, 2.0, 0.5, "right")
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        raise ValueError(f"image must be a (B, C, H, W) tensor. Got "
                         f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image)}")
    depth = check_depth(depth, check)
    if image.shape[0] != depth.shape[0] or image.shape[2:] != depth.shape[2:]:
        raise ValueError(f"image {tuple(image.shape)} and depth {tuple(depth.shape)} must "
                         "share batch size, height and width")
    if fill not in (None, "background"):
        raise ValueError(f"fill must be None or 'background', got {fill!r}")
    b = depth.shape[0]
    sign = view_sign(view, b, depth.device)
    shift = disparity_shift(depth, divergence, convergence, width, max_shift)
    src_dtype = image.dtype
    image = image.float() if not image.is_floating_point() else image

    warped_depth, warped, hole = _splat_warp(shift, sign, depth, mode, image)
    if fill == "background":
        warped = fill_from_background(warped, hole, warped_depth)
    else:
        warped = warped.masked_fill(hole, 0.0)
    if not src_dtype.is_floating_point:
        warped = warped.round().to(src_dtype)
    return warped, hole

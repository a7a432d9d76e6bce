"""Slow, obviously-correct per-pixel versions of :mod:`inpaint_online.warp`.

Plain Python loops over samples, rows and pixels with an explicit depth z-buffer. They exist
to test the batched implementation against (and to measure how much faster it is); never
use them on real data. Arithmetic is done in float32 (numpy scalars) so that rounding
matches the batched code bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from .warp import SAME_SURFACE_PX, disparity_shift, view_sign, _border_pad

f32 = np.float32


def _row_splats(shift_row, sign, mode):
    """For one row: list of (source x, target column, weight)."""
    out = []
    for x, s in enumerate(shift_row):
        if mode == "nearest":
            r = np.sign(f32(s)) * np.floor(np.abs(f32(s)) + f32(0.5))
            out.append((x, int(f32(x) + f32(sign) * r), 1.0))
        else:
            t = f32(x) + f32(sign) * f32(s)
            tf = np.floor(t)
            frac = t - tf
            out.append((x, int(tf), float(f32(1.0) - frac)))
            out.append((x, int(tf) + 1, float(frac)))
    return out


def _warp_row(values, depth, shift, sign, mode):
    """One row: (warped values [C][W], hole [W], warped depth [W])."""
    w = len(depth)
    c = len(values)
    splats = _row_splats(shift, sign, mode)
    # z-buffer per target and per splat kind (floor/ceil alternate in bilinear mode)
    best = [[None, None] for _ in range(w)]
    for i, (x, t, wt) in enumerate(splats):
        kind = 0 if mode == "nearest" else i % 2
        if 0 <= t < w and wt > 0:
            cur = best[t][kind]
            if cur is None or depth[x] > depth[cur[0]]:
                best[t][kind] = (x, wt)
    out = [[0.0] * w for _ in range(c)]
    hole = [True] * w
    wdepth = [0.0] * w
    for t in range(w):
        fw, cw = best[t]
        if fw is not None and cw is not None:
            same = abs(shift[fw[0]] - shift[cw[0]]) < SAME_SURFACE_PX
            if not same:
                near, far = (fw, cw) if depth[fw[0]] >= depth[cw[0]] else (cw, fw)
                hidden = far if near[1] >= 0.5 else near
                fw, cw = (None, cw) if hidden is fw else (fw, None)
        if fw is None and cw is None:
            continue
        hole[t] = False
        # same float32 operations, in the same order, as the batched code
        wf = f32(fw[1]) if fw is not None else f32(0.0)
        wc = f32(cw[1]) if cw is not None else f32(0.0)
        inv = f32(1.0) / (wf + wc)
        wf, wc = wf * inv, wc * inv
        xf = fw[0] if fw is not None else None
        xc = cw[0] if cw is not None else None

        def blend(row):
            a = f32(row[xf]) * wf if xf is not None else f32(0.0)
            b_ = f32(row[xc]) * wc if xc is not None else f32(0.0)
            return float(a + b_)

        for ch in range(c):
            out[ch][t] = blend(values[ch])
        wdepth[t] = blend(depth)
    return out, hole, wdepth


def _fill_row(values, hole, key):
    w = len(hole)
    out = [list(ch) for ch in values]
    for t in range(w):
        if not hole[t]:
            continue
        left = next((i for i in range(t - 1, -1, -1) if not hole[i]), None)
        right = next((i for i in range(t + 1, w) if not hole[i]), None)
        if left is None and right is None:
            continue
        if right is None or (left is not None and key[left] <= key[right]):
            src = left
        else:
            src = right
        for ch in range(len(out)):
            out[ch][t] = values[ch][src]
    return out


def reference_forward_warp(image, depth, divergence, convergence, view, *, width=None,
                           mode="bilinear", fill=None, max_shift=None):
    """Per-pixel loop version of :func:`inpaint_online.warp.forward_warp`."""
    b, c, h, w = image.shape
    shift = disparity_shift(depth.float(), divergence, convergence, width, max_shift)
    signs = view_sign(view, b).view(-1).tolist()
    img = image.float().tolist()
    dep = depth.float().tolist()
    sh = shift.tolist()
    out = torch.zeros(b, c, h, w)
    holes = torch.zeros(b, 1, h, w, dtype=torch.bool)
    for i in range(b):
        for y in range(h):
            vals = [img[i][ch][y] for ch in range(c)]
            o, hole, wdepth = _warp_row(vals, dep[i][0][y], sh[i][0][y], signs[i], mode)
            if fill == "background":
                o = _fill_row(o, hole, wdepth)
            out[i, :, y] = torch.tensor(o)
            holes[i, 0, y] = torch.tensor(hole)
    return out, holes


def reference_close_mask(mask, kernel):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    m = mask.bool()[:, 0].tolist()
    b, h, w = len(m), len(m[0]), len(m[0][0])

    def window(a, i, y, x, op):
        vals = [a[i][yy][xx] for yy in range(y - kh // 2, y + kh // 2 + 1)
                for xx in range(x - kw // 2, x + kw // 2 + 1) if 0 <= yy < h and 0 <= xx < w]
        return op(vals)

    dil = [[[window(m, i, y, x, any) for x in range(w)] for y in range(h)] for i in range(b)]
    ero = [[[window(dil, i, y, x, all) for x in range(w)] for y in range(h)] for i in range(b)]
    return torch.tensor(ero).unsqueeze(1) | mask.bool()


def reference_occlusion_mask(depth, divergence, convergence, view="right", closing=(5, 5), *,
                             width=None, mode="bilinear", border="pad", max_shift=None):
    """Per-pixel loop version of :func:`inpaint_online.warp.occlusion_mask`."""
    b, _, h, w = depth.shape
    depth = depth.float()
    sign = view_sign(view, b)
    if width is None:
        width = float(w)
    pad = _border_pad(divergence, convergence, width, max_shift, w) if border == "pad" else 0
    if pad:
        # edge replication, written out
        cols = [0] * pad + list(range(w)) + [w - 1] * pad
        depth = depth[..., cols]
    opposite = (sign < 0).view(b)
    warped, _ = reference_forward_warp(depth, depth, divergence, convergence, opposite,
                                       width=width, mode=mode, fill="background",
                                       max_shift=max_shift)
    shift = disparity_shift(warped, divergence, convergence, width, max_shift).tolist()
    signs = sign.view(-1).tolist()
    wp = warped.shape[-1]
    mask = torch.ones(b, 1, h, wp, dtype=torch.bool)
    for i in range(b):
        for y in range(h):
            for _, t, wt in _row_splats(shift[i][0][y], signs[i], mode):
                if 0 <= t < wp and wt > 0:
                    mask[i, 0, y, t] = False
    mask = mask[..., pad:pad + w]
    if closing is not None:
        mask = reference_close_mask(mask, closing)
    return mask

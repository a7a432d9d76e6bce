"""Slow, obviously-correct per-pixel versions of :mod:`inpaint_online.warp`.

Plain Python loops over samples, rows and pixels with an explicit depth z-buffer. They exist
to test the batched implementation against (and to measure how much faster it is); never
use them on real data. Arithmetic is done in float32 (numpy scalars) so that rounding
matches the batched code bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from .shift import disparity_shift, iw3_shift_scale, view_sign
from .splat import SAME_SURFACE_PX

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


def _mirror_rows(depth, views):
    """Per-sample rows (float32 numpy) in right-view orientation, and the flip flags."""
    b = depth.shape[0]
    left = (view_sign(views, b).view(-1) > 0).tolist()
    d = depth.float().numpy().astype(f32)
    return [d[i, 0, :, ::-1] if left[i] else d[i, 0] for i in range(b)], left


def _finish(masks, left, closing):
    out = torch.stack([torch.from_numpy(m[:, ::-1].copy() if lf else m) for m, lf in
                       zip(masks, left)])[:, None]
    return reference_close_mask(out, closing) if closing is not None else out


def reference_geometric_mask(depth, divergence, convergence, view="right", closing=None, *,
                             width=None, border="pad", max_shift=None):
    """The exact occlusion of ``method="geometric"``, written literally: for every pixel
    ``x``, every pixel ``y`` of its row (the row extended by edge replication with
    ``border="pad"``) is tested: is it nearer (larger shift) and does its footprint contain
    ``p(x)``? Footprints: midpoints to same-surface neighbours (shifts within 1 px), half a
    pixel across a jump. Right view; the left view is mirrored."""
    b, _, h, w = depth.shape
    rows, left = _mirror_rows(depth, view)
    shift = disparity_shift(torch.from_numpy(np.stack(rows)[:, None].copy()), divergence,
                            convergence, w if width is None else width, max_shift)
    shift = shift.numpy().astype(f32)
    masks = []
    for i in range(b):
        m = np.zeros((h, w), dtype=bool)
        pad = int(np.ceil(2 * np.abs(shift[i]).max())) + 2 if border == "pad" else 0
        for y in range(h):
            s = [shift[i, 0, y, 0]] * pad + list(shift[i, 0, y]) + [shift[i, 0, y, -1]] * pad
            xs = range(-pad, w + pad)
            p = [f32(x) + f32(sv) for x, sv in zip(xs, s)]
            n = len(s)
            lo, hi = [], []
            for j in range(n):
                if j > 0 and abs(f32(s[j] - s[j - 1])) < 1:
                    lo.append((p[j - 1] + p[j]) * f32(0.5))
                else:
                    lo.append(p[j] - f32(0.5))
                if j < n - 1 and abs(f32(s[j + 1] - s[j])) < 1:
                    hi.append((p[j] + p[j + 1]) * f32(0.5))
                else:
                    hi.append(p[j] + f32(0.5))
            for x in range(w):
                j = x + pad
                q = p[j]
                if border == "none" and not (-0.5 <= q < w - 0.5):
                    m[y, x] = True
                    continue
                m[y, x] = any(s[k] > s[j] and lo[k] <= q < hi[k] for k in range(n))
        masks.append(m)
    return _finish(masks, left, closing)


def _iw3_row_warp(vals, depth, shift, sign):
    """iw3's bilinear depth-ordered splat of one padded row (lists of float32).

    ``vals``: list of channels. Returns channels with -1 where no splat landed."""
    w = len(depth)
    best = {}    # (kind, target) -> (depth, source, weight)
    for x in range(w):
        t = min(max(f32(x) + f32(sign) * shift[x], f32(0)), f32(w - 1))
        tf, tc = np.floor(t), np.ceil(t)
        cw = min(max(t - tf, f32(1e-5)), f32(1 - 1e-5))
        for kind, tgt, wt in ((0, int(tf), f32(1) - cw), (1, int(tc), cw)):
            cur = best.get((kind, tgt))
            # the nearest source wins (iw3 copies in ascending depth order: last one stays)
            if cur is None or depth[x] >= cur[0]:
                best[(kind, tgt)] = (depth[x], x, wt)
    out = [[f32(-1)] * w for _ in vals]
    for t in range(w):
        f, c = best.get((0, t)), best.get((1, t))
        wf = f[2] if f else f32(0)
        wc = c[2] if c else f32(0)
        if wf + wc == 0:
            continue
        for ch, v in enumerate(vals):
            vf = v[f[1]] if f else f32(-1)
            vc = v[c[1]] if c else f32(-1)
            out[ch][t] = (vf * wf + vc * wc) / (wf + wc)
    return out


def _shift_fill_passes(v, from_left):
    """iw3's shift_fill: each pass every negative pixel takes its neighbour's value."""
    v = list(v)
    for _ in range(100):
        if not any(a < 0 for a in v):
            break
        if from_left:
            v = [(v[i - 1] if i > 0 else f32(0)) if v[i] < 0 else v[i] for i in range(len(v))]
        else:
            v = [(v[i + 1] if i < len(v) - 1 else f32(0)) if v[i] < 0 else v[i]
                 for i in range(len(v))]
    return v


def _layered_passes(idx, larger_than_right):
    """iw3's fix_layered_holes: mark and replace out-of-order indices, one pixel per pass."""
    idx = list(idx)
    n = len(idx)
    marked = [False] * n
    for _ in range(100):
        if larger_than_right:
            bad = [i < n - 1 and idx[i] > idx[i + 1] for i in range(n)]
            new = [idx[i + 1] if bad[i] else idx[i] for i in range(n)]
        else:
            bad = [i > 0 and idx[i - 1] > idx[i] for i in range(n)]
            new = [idx[i - 1] if bad[i] else idx[i] for i in range(n)]
        if not any(bad):
            break
        marked = [m or bd for m, bd in zip(marked, bad)]
        idx = new
    return marked


def reference_iw3_mask(depth, divergence, convergence, view="right", closing=None, *,
                       width=None):
    """iw3's ``nonwarp_mask`` (right view) rebuilt pixel by pixel with its own loops: an
    explicit depth z-buffer, iw3's padding ``int(width * div / 100 + 2)``, and the
    one-pixel-per-pass fill and layered-hole loops. Returns ``(mask, layered)``; the left
    view is mirrored."""
    b, _, h, w = depth.shape
    rows, left = _mirror_rows(depth, view)
    div = torch.as_tensor(divergence, dtype=torch.float64).expand(b).tolist()
    conv = torch.as_tensor(convergence, dtype=torch.float64).expand(b).tolist()
    wid = torch.as_tensor(w if width is None else width, dtype=torch.float64).expand(b).tolist()
    masks, layers = [], []
    for i in range(b):
        k = iw3_shift_scale(div[i], wid[i])
        kc = f32(k * conv[i])
        k = f32(k)
        pad = int(wid[i] * div[i] * 0.01 + 2)
        m = np.zeros((h, w), dtype=bool)
        lay = np.zeros((h, w), dtype=bool)
        for y in range(h):
            row = list(rows[i][y])
            d = [row[0]] * pad + row + [row[-1]] * pad
            xs = [f32(x) for x in range(len(d))]
            s = [d[x] * k - kc for x in range(len(d))]
            dep, idx = _iw3_row_warp([d, xs], d, s, +1)
            dep, idx = dep[pad:pad + w], idx[pad:pad + w]
            idx = _shift_fill_passes(idx, from_left=True)
            bad = _layered_passes(idx, larger_than_right=True)
            dep = [f32(-2) if bd else v for v, bd in zip(dep, bad)]
            dep = _shift_fill_passes(dep, from_left=True)
            dep = [(v * f32(3)) / f32(3) for v in dep]
            d2 = [dep[0]] * pad + dep + [dep[-1]] * pad
            s2 = [d2[x] * k - kc for x in range(len(d2))]
            idx2, = _iw3_row_warp([xs], d2, s2, -1)
            idx2 = idx2[pad:pad + w]
            hole = [v < 0 for v in idx2]
            idx2 = _shift_fill_passes(idx2, from_left=False)
            bad = _layered_passes(idx2, larger_than_right=False)
            m[y] = np.array(hole) | np.array(bad)
            lay[y] = bad
        masks.append(m)
        layers.append(lay)
    return _finish(masks, left, closing), _finish(layers, left, None)

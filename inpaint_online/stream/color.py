"""Photometric jitter on the training device, per sample (docs/design.md, "stream").

The workers only draw the four factors of a sample (:func:`draw_jitter`, from the sample's
own generator); the collate applies them to the whole batch at once in float
(:func:`apply_jitter`): brightness, contrast, saturation, then a hue shift in HSV — the
operations and order of torchvision's ``adjust_*`` functions, batched, with no loop over
samples and no host sync. On a CPU worker the same four operations on a 16-frame 1080p clip
cost ~100 ms (torchvision's uint8 hue shift makes four float round trips); on the device
they are a few element-wise passes over a batch the collate reads anyway.
"""

from __future__ import annotations

import torch

__all__ = ["IDENTITY", "draw_jitter", "apply_jitter", "jitter_frames"]

# brightness, contrast, saturation factors and a hue shift (of a full turn) that change nothing
IDENTITY = (1.0, 1.0, 1.0, 0.0)


def draw_jitter(g: torch.Generator, strength: tuple[float, float, float, float]) -> torch.Tensor:
    """One sample's factors ``(brightness, contrast, saturation, hue)``, float32 ``(4,)``:
    each of the first three ``1 + a·u``, the hue ``a·u`` with ``u`` uniform in [-1, 1) and
    ``a`` the matching ``strength`` (``data.jitter``)."""
    u = torch.rand(4, generator=g) * 2 - 1
    s = torch.tensor(strength, dtype=torch.float32)
    return torch.tensor(IDENTITY, dtype=torch.float32) + s * u


def _gray(img: torch.Tensor) -> torch.Tensor:
    r, g, b = img.unbind(-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def _blend(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (f * a + (1 - f) * b).clamp_(0, 1)


def _rgb_to_hsv(img: torch.Tensor) -> torch.Tensor:
    r, g, b = img.unbind(-3)
    maxc, minc = img.amax(-3), img.amin(-3)
    cr = maxc - minc
    s = cr / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    crd = torch.where(cr == 0, torch.ones_like(cr), cr)
    rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    h = torch.where(is_r, bc - gc, torch.where(is_g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.remainder(h / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), -3)


def _hsv_to_rgb(img: torch.Tensor) -> torch.Tensor:
    h, s, v = img.unbind(-3)
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = torch.remainder(i, 6.0).unsqueeze(-3)
    p = (v * (1 - s)).clamp(0, 1)
    q = (v * (1 - s * f)).clamp(0, 1)
    t = (v * (1 - s * (1 - f))).clamp(0, 1)
    # the sextant picks which of (v, q, p, t) each channel takes
    table = torch.stack((v, q, p, p, t, v, t, v, v, q, p, p, p, p, t, v, v, q), -3)
    table = table.unflatten(-3, (3, 6))          # (..., channel, sextant, H, W)
    idx = i.long().unsqueeze(-3).expand(*table.shape[:-3], 1, *table.shape[-2:])
    return table.gather(-3, idx).squeeze(-3)


def apply_jitter(img: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``img`` float ``(N, 3, H, W)`` in [0, 1], ``factors`` ``(N, 4)`` from
    :func:`draw_jitter` (or :data:`IDENTITY`) → the jittered batch, in [0, 1]."""
    f = factors.to(img.device, img.dtype).view(-1, 4, 1, 1, 1).unbind(1)
    out = (img * f[0]).clamp(0, 1)
    out = _blend(out, _gray(out).mean((-3, -2, -1), keepdim=True), f[1])
    out = _blend(out, _gray(out), f[2])
    hsv = _rgb_to_hsv(out)
    h = torch.remainder(hsv[:, :1] + f[3], 1.0)
    return _hsv_to_rgb(torch.cat((h, hsv[:, 1:]), 1))


def jitter_frames(y: torch.Tensor, factors: torch.Tensor, t: int, sync_ok: bool) -> torch.Tensor:
    """The workers' draws ``factors`` ``(n, 4)`` applied to the frames ``y`` ``(n·t, 3, H, W)``
    (a clip's ``t`` frames share their draw). Where a sync is free (``sync_ok``: CPU) only the
    samples that drew one are computed."""
    f = factors.float().repeat_interleave(t, 0)
    if not sync_ok:
        return apply_jitter(y, f.to(y.device, non_blocking=True))
    on = (f != torch.tensor(IDENTITY)).any(1).nonzero()[:, 0]
    if on.numel():
        y = y.clone()
        y[on] = apply_jitter(y[on], f[on].to(y.device))
    return y

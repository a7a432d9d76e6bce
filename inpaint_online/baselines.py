"""The classical fills a trained model is measured against (``compare``, ``evaluate_stereo``,
the validation's reference): OpenCV's Telea and Navier–Stokes where OpenCV is installed, a
diffusion fill, push-pull, background push-pull, background copy, row interpolation.

Every fill takes ``(x, mask, depth)``: ``x`` ``(B, 3, H, W)`` in [0, 1] with the holes
anywhere, ``mask`` ``(B, 1, H, W)`` (> 0 = hole), ``depth`` inverse depth (larger = nearer;
read by the background fills only), and returns ``x`` with the holes filled.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .models import background_pushpull_fill, composite, prefill_holes
from .warp import fill_from_background

__all__ = ["classical_fills", "fill_all", "background_fill", "diffusion_fill", "opencv_fill",
           "opencv_available"]


def background_fill(x: torch.Tensor, mask: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """Baseline: each hole pixel copies the nearest known pixel of its row on the background
    (smaller inverse depth) side — what a converter without a model does."""
    hole = mask > 0
    key = torch.where(hole, 2.0, depth)     # holes never win the background comparison
    return composite(x, mask, fill_from_background(x, hole, key))


def opencv_available() -> bool:
    """Whether OpenCV (``opencv-python-headless``, the ``eval`` extra) can be imported."""
    import importlib.util
    return importlib.util.find_spec("cv2") is not None


def opencv_fill(x: torch.Tensor, mask: torch.Tensor, method: str = "telea",
                radius: int = 5) -> torch.Tensor:
    """Baseline: OpenCV's inpainting (``telea``: Telea 2004, fast marching; ``ns``:
    Navier–Stokes, Bertalmio 2001) per image, on 8-bit RGB as OpenCV works. CPU."""
    import cv2
    flags = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[method]
    out = []
    for img, m in zip(x, mask):
        u8 = (img.permute(1, 2, 0).float().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        mm = (m[0].cpu().numpy() > 0).astype(np.uint8)
        r = cv2.inpaint(np.ascontiguousarray(u8), mm, radius, flags)
        out.append(torch.from_numpy(r).permute(2, 0, 1).float() / 255)
    return composite(x, mask, torch.stack(out).to(x.device, x.dtype))


def classical_fills() -> dict:
    """The classical baselines, name → ``fill(x, mask, depth)`` (``depth``: larger = nearer,
    only background copy reads it): OpenCV Telea and Navier–Stokes where OpenCV is
    installed, the diffusion fill, push-pull, background push-pull (push-pull from the
    farther side only, by depth), background copy, row interpolation."""
    out = {}
    if opencv_available():
        out["opencv telea"] = lambda x, m, d: opencv_fill(x, m, "telea")
        out["opencv navier-stokes"] = lambda x, m, d: opencv_fill(x, m, "ns")
    out["diffusion"] = lambda x, m, d: diffusion_fill(x, m)
    out["push-pull"] = lambda x, m, d: prefill_holes(x, m, "pushpull")
    out["background push-pull"] = lambda x, m, d: background_pushpull_fill(x, m, d)
    out["background copy"] = lambda x, m, d: background_fill(x, m, d)
    out["row interpolation"] = lambda x, m, d: prefill_holes(x, m, "interp")
    return out


def fill_all(fills: dict, x: torch.Tensor, mask: torch.Tensor,
             depth: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every fill of ``fills`` (:func:`classical_fills`) on images ``(B, 3, H, W)`` or clips
    ``(B, T, 3, H, W)`` (their frames filled one by one), each result shaped like ``x``."""
    flat = (lambda v: v.flatten(0, 1)) if x.dim() == 5 else (lambda v: v)   # noqa: E731
    return {name: fn(flat(x), flat(mask), flat(depth)).view(x.shape) for name, fn in fills.items()}


def diffusion_fill(x: torch.Tensor, mask: torch.Tensor, iters: int = 300) -> torch.Tensor:
    """Baseline: harmonic fill (repeated 3×3 averaging inside the holes), a cheap stand-in
    for classical diffusion inpainting (Telea/Navier–Stokes in OpenCV)."""
    m = (mask > 0).float()
    known = 1 - m
    # start from the row-wise nearest known pixel so that few iterations suffice
    cur = fill_from_background(x, m > 0, torch.zeros_like(m))
    k = torch.full((x.shape[1], 1, 3, 3), 1 / 9, device=x.device)
    for _ in range(iters):
        blur = F.conv2d(F.pad(cur, (1, 1, 1, 1), mode="replicate"), k, groups=x.shape[1])
        cur = x * known + blur * m
    return cur

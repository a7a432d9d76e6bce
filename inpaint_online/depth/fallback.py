"""The LOW-QUALITY classical heuristic that needs no weights (``fallback_lowquality``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .base import FALLBACK, DepthBackend, DepthRequest, normalise, resize_frames


class FallbackBackend(DepthBackend):
    """LOW QUALITY classical heuristic, for running the pipeline without any weights.

    Near = low in the frame and textured (a ground-plane prior plus a sharpness cue), snapped
    to image edges with a guided filter so that depth steps follow object outlines. It is
    not a depth estimator: use it for demos and tests, never for a real dataset.

    The smooth map is made at ``size`` px (long side); its layers are cut at the size the
    map will be stored at (``request.size``, else the frame's): a step between layers is then
    as sharp as an object boundary, not a ramp of several pixels from upsampling a small map —
    soft ramps fold into holes only under large shifts, so at iw3's level 1 a 640-px demo
    frame had almost none (docs/benchmarks.md, export).
    """

    name = FALLBACK

    def __init__(self, device: str = "cpu", size: int = 256):
        self.device = torch.device(device)
        self.size = size

    def settings(self) -> dict:
        return {"size": self.size, "version": 4}

    def prepare(self, frames: np.ndarray, request: DepthRequest):
        """The frames at the work size (long side ``size``), on the CPU; the key holds the
        size the layers are cut at (``request.size``, else the frame's)."""
        h, w = frames.shape[1:3]
        s = self.size / max(h, w)
        work = (max(8, round(h * s)), max(8, round(w * s)))
        out = tuple(request.size) if request.size else (w, h)
        return ("fallback", *work, *out), resize_frames(frames, work, "bilinear")

    @torch.inference_mode()
    def infer(self, x: torch.Tensor, key) -> np.ndarray:
        """The heuristic's layered map before the last per-frame min-max (its cues are
        normalised per frame inside: it is not a model with a scale of its own)."""
        x = x.to(self.device)
        ow, oh = key[3], key[4]
        gray = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        n, _, gh, gw = gray.shape
        ground = torch.linspace(0, 1, gh, device=x.device).view(1, 1, gh, 1).expand(n, 1, gh, gw)
        gy, gx = torch.gradient(gray, dim=(2, 3))
        sharp = _box(torch.sqrt(gx ** 2 + gy ** 2), 7)
        q = torch.quantile(sharp.reshape(n, -1), 0.99, dim=1).view(n, 1, 1, 1).clamp(min=1e-6)
        d = 0.65 * ground + 0.35 * (sharp / q).clamp(0, 1)
        d = normalise(_guided_filter(gray, _box(d, 9), r=6, eps=1e-3)[:, 0])[:, None]
        # a few depth layers with hard steps, cut at the output size: a smooth map folds
        # nowhere, so it would have no disocclusions at all (holes need shift jumps over ~1 px)
        d = F.interpolate(d, (oh, ow), mode="bilinear", align_corners=False)
        d = 0.75 * torch.round(d * 4) / 4 + 0.25 * d
        return d[:, 0].cpu().numpy()


def _box(x: torch.Tensor, k: int) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1)


def _guided_filter(guide: torch.Tensor, src: torch.Tensor, r: int, eps: float) -> torch.Tensor:
    """He et al.'s guided filter: edge-aware smoothing of ``src`` along ``guide``'s edges."""
    k = 2 * r + 1
    mg, ms = _box(guide, k), _box(src, k)
    cov = _box(guide * src, k) - mg * ms
    var = _box(guide * guide, k) - mg * mg
    a = cov / (var + eps)
    b = ms - a * mg
    return _box(a, k) * guide + _box(b, k)

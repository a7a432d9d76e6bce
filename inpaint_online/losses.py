"""Losses and metrics inside the holes.

The loss is masked L1 (normalised by the hole area, so small and large holes weigh alike
per pixel) + a small L1 on the known pixels (keeps the raw prediction sane near the hole
border) + 1 − SSIM measured around the holes (the structure term: edges and texture that
L1 blurs away). An optional perceptual term (``loss.perceptual``, LPIPS-style distance of
unit-normalised VGG16 features around the holes, as iw3 uses LPIPS) needs the VGG16 weights
as a local file (``loss.perceptual_weights``): nothing is downloaded at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ConfigError
from .models import composite

__all__ = ["LossConfig", "InpaintLoss", "ssim_map", "hole_psnr", "hole_ssim", "masked_mean",
           "temporal_error", "batch_scores", "mean_scores"]


VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"


class VGGFeatures(nn.Module):
    """Frozen VGG16 up to relu3_3 (torchvision's layout); returns relu1_2, relu2_2, relu3_3."""

    TAPS = (3, 8, 15)

    def __init__(self, weights: str):
        super().__init__()
        from torchvision.models import vgg16
        self.features = vgg16(weights=None).features[: self.TAPS[-1] + 1]
        try:
            sd = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ConfigError(f"{weights}: cannot read VGG16 weights ({type(e).__name__}: {e})") from None
        sd = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")
              and int(k.split(".")[1]) <= self.TAPS[-1]}
        try:
            self.features.load_state_dict(sd)
        except RuntimeError as e:
            raise ConfigError(f"{weights}: not torchvision VGG16 weights "
                             f"({str(e).splitlines()[0][:200]})") from None
        self.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, z = [], (x - self.mean) / self.std
        for i, layer in enumerate(self.features):
            z = layer(z)
            if i in self.TAPS:
                out.append(z)
        return out


def perceptual_distance(vgg: VGGFeatures, a: torch.Tensor, b: torch.Tensor,
                        mask: torch.Tensor) -> torch.Tensor:
    """LPIPS-style: squared difference of channel-normalised features, averaged around the
    holes (the mask max-pooled to each feature resolution), summed over the three taps."""
    total = a.new_zeros(())
    for fa, fb in zip(vgg(a), vgg(b)):
        fa = fa / (fa.norm(dim=1, keepdim=True) + 1e-10)
        fb = fb / (fb.norm(dim=1, keepdim=True) + 1e-10)
        m = F.adaptive_max_pool2d(mask, fa.shape[-2:])
        total = total + masked_mean(((fa - fb) ** 2).sum(1, keepdim=True), m)
    return total


@dataclass
class LossConfig:
    """The ``loss:`` section: weights of the terms."""
    hole_l1: float = 1.0
    hole_l2: float = 0.0                   # mean squared error in the holes (what PSNR scores)
    valid_l1: float = 0.1
    ssim: float = 0.4
    ssim_window: int = 7
    temporal: float = 0.0                  # clips: L1 of (Δ_t output − Δ_t target) in the holes
    perceptual: float = 0.0                # VGG16 feature distance around the holes
    perceptual_weights: str = ""           # torchvision's vgg16-397923af.pth (local path)
    per_sample: bool = False               # hole terms: mean over each sample's (clips: each
                                           # frame's) holes, then over the batch: every sample
                                           # counts the same, however wide its holes. False:
                                           # the mean over all hole pixels of the batch
    blend_l1: float = 0.0                  # model.prefill dual: L1 in the holes of the two
                                           # fills as the net blended them, before its
                                           # correction: the share must pick the right fill
                                           # by itself, not leave it to the correction

    def validate(self) -> None:
        if min(self.hole_l1, self.hole_l2, self.valid_l1, self.ssim, self.temporal, self.perceptual,
               self.blend_l1) < 0:
            raise ValueError("loss weights must be >= 0")
        if self.perceptual > 0 and not Path(self.perceptual_weights).is_file():
            raise ValueError(
                f"loss.perceptual needs loss.perceptual_weights = a local copy of torchvision's "
                f"VGG16 weights (vgg16-397923af.pth, {VGG16_URL}); got "
                f"{self.perceptual_weights or 'nothing'!r}")
        if self.ssim_window < 3 or self.ssim_window % 2 == 0:
            raise ValueError(f"loss.ssim_window must be odd and >= 3, got {self.ssim_window}")


def masked_mean(v: torch.Tensor, m: torch.Tensor, dims=None) -> torch.Tensor:
    """Mean of ``v`` where ``m`` (broadcast over channels); over ``dims`` or everything."""
    m = m.expand_as(v)
    if dims is None:
        return (v * m).sum() / m.sum().clamp(min=1.0)
    return (v * m).sum(dims) / m.sum(dims).clamp(min=1.0)


def _gauss(window: int, device, dtype) -> torch.Tensor:
    sigma = 1.5 * window / 11
    x = torch.arange(window, device=device, dtype=dtype) - window // 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Per-pixel SSIM ``(B, C, H, W)`` of images in [0, 1] (Gaussian window, reflect pad)."""
    c = a.shape[1]
    g = _gauss(window, a.device, a.dtype)
    kx = g.view(1, 1, 1, -1).expand(c, 1, 1, window)
    ky = g.view(1, 1, -1, 1).expand(c, 1, window, 1)
    p = window // 2

    def blur(t):
        t = F.pad(t, (p, p, p, p), mode="reflect")
        return F.conv2d(F.conv2d(t, kx, groups=c), ky, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    saa = blur(a * a) - mu_a ** 2
    sbb = blur(b * b) - mu_b ** 2
    sab = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))


def _around(mask: torch.Tensor, window: int) -> torch.Tensor:
    """The holes grown by half a window: where SSIM sees hole pixels."""
    return F.max_pool2d(mask, window, stride=1, padding=window // 2)


class InpaintLoss:
    def __init__(self, config: LossConfig | None = None):
        self.cfg = config or LossConfig()
        self.cfg.validate()
        self.vgg = VGGFeatures(self.cfg.perceptual_weights) if self.cfg.perceptual > 0 else None

    def __call__(self, pred: torch.Tensor, batch, blend: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, dict]:
        """Total loss and its parts (detached) for a prediction of a :class:`Batch`
        (clips ``(B, T, ...)`` are scored per frame, plus the temporal term). ``blend``: the
        dual model's blended fills (``loss.blend_l1``)."""
        c = self.cfg
        pred = pred.float()
        if blend is not None and blend.dim() == 5:
            blend = blend.flatten(0, 1)
        temporal = None
        if pred.dim() == 5:
            if c.temporal > 0 and pred.shape[1] > 1:
                out = composite(batch.x, batch.mask, pred)
                temporal = temporal_error(out, batch.y, batch.mask).mean()
            pred = pred.flatten(0, 1)
        x, m, y = (v.flatten(0, 1) if v.dim() == 5 else v for v in (batch.x, batch.mask, batch.y))
        diff = (pred - y).abs()

        def in_holes(v: torch.Tensor) -> torch.Tensor:
            if not c.per_sample:
                return masked_mean(v, m)
            has = m.flatten(1).amax(1)            # samples without holes count for nothing
            per = masked_mean(v, m, dims=(1, 2, 3))
            return (per * has).sum() / has.sum().clamp(min=1.0)

        parts = {"hole_l1": in_holes(diff), "valid_l1": masked_mean(diff, 1 - m)}
        total = c.hole_l1 * parts["hole_l1"] + c.valid_l1 * parts["valid_l1"]
        if blend is not None and c.blend_l1 > 0:
            parts["blend_l1"] = in_holes((blend.float() - y).abs())
            total = total + c.blend_l1 * parts["blend_l1"]
        if c.hole_l2 > 0:
            parts["hole_l2"] = in_holes(diff ** 2)
            total = total + c.hole_l2 * parts["hole_l2"]
        if c.ssim > 0:
            out = composite(x, m, pred)
            s = ssim_map(out, y, c.ssim_window)
            parts["ssim"] = masked_mean(s, _around(m, c.ssim_window))
            total = total + c.ssim * (1 - parts["ssim"])
        if self.vgg is not None:
            self.vgg.to(pred.device)
            parts["perceptual"] = perceptual_distance(self.vgg, composite(x, m, pred), y, m)
            total = total + c.perceptual * parts["perceptual"]
        if temporal is not None:
            parts["temporal"] = temporal
            total = total + c.temporal * temporal
        return total, {k: v.detach() for k, v in parts.items()}


def temporal_error(out: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Temporal-consistency error of clips ``(B, T, C, H, W)``, per sample ``(B,)``.

    Mean |(out_t − out_{t−1}) − (y_t − y_{t−1})| over the pixels that are a hole in frame t
    or t−1: how far the output's frame-to-frame change departs from the true change there
    (flicker, popping, texture swimming). Camera and object motion are in the target's
    change too, so no optical flow is needed; 0 = the holes change exactly as the truth.
    (It differences *frames*, not colour channels — the slip of iw3 that docs/design.md notes.)
    """
    if out.dim() != 5 or out.shape[1] < 2:
        raise ValueError(f"temporal_error needs clips (B, T>=2, C, H, W), got {tuple(out.shape)}")
    d_out = out[:, 1:].float() - out[:, :-1].float()
    d_y = y[:, 1:].float() - y[:, :-1].float()
    region = torch.maximum(mask[:, 1:], mask[:, :-1])
    return masked_mean((d_out - d_y).abs(), region, dims=(1, 2, 3, 4))


def batch_scores(out: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Scores of a composited output against its target: ``psnr_hole`` and ``ssim_hole`` per
    sample with holes, ``psnr_full`` per sample, and for clips ``(B, T, ...)`` (scored per
    frame) ``temporal_error`` per clip."""
    rows = {}
    if out.dim() == 5 and out.shape[1] > 1:
        rows["temporal_error"] = temporal_error(out, y, mask)
    out, y, m = (v.flatten(0, 1) if v.dim() == 5 else v for v in (out, y, mask))
    has = m.flatten(1).sum(1) > 0
    rows["psnr_hole"] = hole_psnr(out, y, m)[has]
    rows["ssim_hole"] = hole_ssim(out, y, m)[has]
    rows["psnr_full"] = hole_psnr(out, y, torch.ones_like(m))
    return rows


def mean_scores(rows: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Each score averaged over all the samples of several :func:`batch_scores` results."""
    keys = dict.fromkeys(k for r in rows for k in r)
    out = {}
    for k in keys:
        v = torch.cat([r[k] for r in rows if k in r])
        out[k] = v.mean().item() if v.numel() else float("nan")
    return out


def hole_psnr(out: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) inside the holes, per sample ``(B,)``; images in [0, 1]."""
    mse = masked_mean((out.float() - y.float()) ** 2, mask, dims=(1, 2, 3))
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-10))


def hole_ssim(out: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean SSIM over the hole pixels, per sample ``(B,)``."""
    return masked_mean(ssim_map(out.float(), y.float(), window), mask, dims=(1, 2, 3))

"""The building blocks of iw3's light inpainting networks, written from their architecture
(nunif: ``nunif/modules/attention.py``'s windowed gMLP, ``norm.py``, ``init.py``,
``gaussian_filter.py``; ``iw3/models/light_*inpaint_v1.py``'s blocks) with the same
parameter names and shapes, so a ``state_dict`` moves between the two as it is
(docs/iw3.md; ``benchmarks/iw3_model_parity.py`` checks the outputs against nunif's own).

Token order inside a window matters (the spatial projection mixes tokens by position):
windows are cut row-major, a token's index is ``row · width + column`` of the window, and for
3-D windows ``(frame, row, column)``, as nunif cuts them.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["replicate_pad", "GMLP", "WindowGMLP2d", "WindowGMLP3d", "GLUConvMLP", "GMLPBlock",
           "GMLP3DBlock", "FastLayerNorm", "gaussian_blur_mask", "basic_init", "icnr_init"]


def replicate_pad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Edge replication ``(left, right, top, bottom)`` of ``(B, C, H, W)`` whose padding
    carries no gradient into the edge pixels (nunif's ``detach=True`` padding; plain
    ``F.pad(mode="replicate")`` would sum the gradients of every copy into them)."""
    left, right, top, bottom = pad
    parts = []
    if left:
        parts.append(x[..., :1].detach().expand(*x.shape[:-1], left))
    parts.append(x)
    if right:
        parts.append(x[..., -1:].detach().expand(*x.shape[:-1], right))
    x = torch.cat(parts, -1) if len(parts) > 1 else x
    parts = []
    if top:
        parts.append(x[..., :1, :].detach().expand(*x.shape[:-2], top, x.shape[-1]))
    parts.append(x)
    if bottom:
        parts.append(x[..., -1:, :].detach().expand(*x.shape[:-2], bottom, x.shape[-1]))
    x = torch.cat(parts, -2) if len(parts) > 1 else x
    return x.contiguous()


class ReplicatePad(nn.Module):
    def __init__(self, pad: int):
        super().__init__()
        self.pad = (pad,) * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return replicate_pad(x, self.pad)


class FastLayerNorm(nn.LayerNorm):
    """LayerNorm over the last axis that stays in the autocast dtype (no fp32 upcast)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):
            dt = torch.get_autocast_dtype(x.device.type)
            w = self.weight.to(dt) if self.weight is not None else None
            b = self.bias.to(dt) if self.bias is not None else None
            with torch.autocast(x.device.type, enabled=False):
                return F.layer_norm(x.to(dt), self.normalized_shape, w, b, self.eps)
        return super().forward(x)


def basic_init(module: nn.Module) -> None:
    """nunif's default initialisation: convolutions Kaiming-normal (fan-out, ReLU) with zero
    bias, linear layers truncated-normal (σ 0.02) with zero bias."""
    for m in ([module] if isinstance(module, (nn.Conv2d, nn.Linear)) else module.modules()):
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, 0.0, 0.02)
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)


@torch.no_grad()
def icnr_init(conv: nn.Conv2d, scale: int) -> None:
    """ICNR: a conv before a pixel shuffle by ``scale`` starts as a nearest-neighbour
    upsampling of one random conv (no checkerboard at step 0)."""
    out, cin, kh, kw = conv.weight.shape
    w = torch.empty(out // scale ** 2, cin, kh, kw)
    nn.init.kaiming_normal_(w)
    w = w.permute(1, 0, 2, 3)
    w = F.pixel_unshuffle(F.interpolate(w, scale_factor=scale, mode="nearest"), scale)
    conv.weight.copy_(w.permute(1, 0, 2, 3))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def gaussian_blur_mask(mask: torch.Tensor, kernel_size: int = 15) -> torch.Tensor:
    """A separable Gaussian of ``kernel_size`` taps (σ = 0.15·size + 0.35, torchvision's rule)
    over a ``(B, 1, H, W)`` mask, edges replicated: the soft band iw3's light models blend
    their output into around every hole."""
    sigma = kernel_size * 0.15 + 0.35
    half = (kernel_size - 1) * 0.5
    r = torch.linspace(-half, half, kernel_size, device=mask.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (r / sigma) ** 2)
    k = (k / k.sum()).to(mask.dtype)
    p = kernel_size // 2
    x = replicate_pad(mask, (p, p, p, p))
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(x, k.view(1, 1, -1, 1))


class GMLP(nn.Module):
    """gMLP over tokens ``(B, N, C)``: a gated MLP whose gate mixes the N tokens of a window
    with one learned N x N projection."""

    def __init__(self, dim: int, seq_len: int, mlp_ratio: float = 1):
        super().__init__()
        hidden = int(dim * mlp_ratio * 2)
        self.proj_in = nn.Linear(dim, hidden)
        self.proj_spatial = nn.Conv1d(seq_len, seq_len, kernel_size=1)
        self.proj_out = nn.Linear(hidden // 2, dim)
        basic_init(self.proj_in)
        basic_init(self.proj_out)
        nn.init.uniform_(self.proj_spatial.weight, -1e-3 / dim, 1e-3 / dim)
        nn.init.constant_(self.proj_spatial.bias, 1.0)      # the gate starts open

    def forward(self, x, norm1=None, norm2=None):
        shortcut = x
        if norm1 is not None:
            x = norm1(x)
        u, v = F.gelu(self.proj_in(x)).chunk(2, dim=-1)
        if norm2 is not None:
            v = norm2(v)
        return self.proj_out(u * self.proj_spatial(v)) + shortcut


def _windows2d(x: torch.Tensor, ws: tuple[int, int]) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // ws[0], ws[0], w // ws[1], ws[1]).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, ws[0] * ws[1], c)


def _unwindows2d(x: torch.Tensor, shape, ws: tuple[int, int]) -> torch.Tensor:
    b, c, h, w = shape
    x = x.reshape(b, h // ws[0], w // ws[1], ws[0], ws[1], c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, h, w)


class WindowGMLP2d(nn.Module):
    """gMLP inside non-overlapping windows of ``(B, C, H, W)``; ``shift`` offsets the windows
    by half a window (zero padding around the map, cropped after)."""

    def __init__(self, dim: int, window_size, mlp_ratio: float = 2, shift: bool = False):
        super().__init__()
        ws = window_size if isinstance(window_size, (tuple, list)) else (window_size, window_size)
        self.window_size = tuple(ws)
        self.shift = shift
        self.gmlp = GMLP(dim, seq_len=ws[0] * ws[1], mlp_ratio=mlp_ratio)

    def forward(self, x, norm1=None, norm2=None):
        ph, pw = self.window_size[0] // 2, self.window_size[1] // 2
        if self.shift:
            x = F.pad(x, (pw, pw, ph, ph))
        shape = x.shape
        x = _unwindows2d(self.gmlp(_windows2d(x, self.window_size), norm1, norm2), shape,
                         self.window_size)
        if self.shift:
            x = F.pad(x, (-pw, -pw, -ph, -ph))
        return x


class WindowGMLP3d(nn.Module):
    """gMLP inside ``(frames, rows, columns)`` windows of ``(B, C, D, H, W)`` (no shift: the
    video model uses none)."""

    def __init__(self, dim: int, window_size, mlp_ratio: float = 2):
        super().__init__()
        self.window_size = tuple(window_size)
        sd, sh, sw = self.window_size
        self.gmlp = GMLP(dim, seq_len=sd * sh * sw, mlp_ratio=mlp_ratio)

    def forward(self, x, norm1=None, norm2=None):
        b, c, d, h, w = x.shape
        sd, sh, sw = self.window_size
        z = x.reshape(b, c, d // sd, sd, h // sh, sh, w // sw, sw).permute(0, 2, 4, 6, 3, 5, 7, 1)
        z = self.gmlp(z.reshape(-1, sd * sh * sw, c), norm1, norm2)
        z = z.reshape(b, d // sd, h // sh, w // sw, sd, sh, sw, c).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return z.reshape(b, c, d, h, w)


class GLUConvMLP(nn.Module):
    """1x1 conv → GLU → replicate-padded k x k conv."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, mlp_ratio: float = 2):
        super().__init__()
        mid = int(cout * mlp_ratio)
        self.pad = ReplicatePad((kernel_size - 1) // 2)
        self.w1 = nn.Conv2d(cin, mid, kernel_size=1)
        self.w2 = nn.Conv2d(mid // 2, cout, kernel_size=kernel_size)
        basic_init(self)

    def forward(self, x):
        return self.w2(self.pad(F.glu(self.w1(x), dim=1)))


class GMLPBlock(nn.Module):
    """Windowed gMLP (pre-norm, residual) then a GLU conv MLP (residual)."""

    def __init__(self, dim: int, window_size, mlp_ratio: float = 2, shift: bool = False):
        super().__init__()
        self.gmlp = WindowGMLP2d(dim, window_size=window_size, shift=shift, mlp_ratio=mlp_ratio)
        self.norm1 = FastLayerNorm(dim, bias=False)
        self.norm2 = FastLayerNorm(int(dim * mlp_ratio), bias=False)
        self.glu_conv = GLUConvMLP(dim, dim, kernel_size=3, mlp_ratio=1)

    def forward(self, x):
        x = x + self.gmlp(x, self.norm1, self.norm2)
        return x + self.glu_conv(x)


class GMLP3DBlock(nn.Module):
    """A gMLP across frames at each position (the batch axis holds the frames, in windows of
    ``window_size[0]`` consecutive ones), then a per-frame GLU conv MLP."""

    def __init__(self, dim: int, window_size, mlp_ratio: float = 2):
        super().__init__()
        self.gmlp = WindowGMLP3d(dim, window_size=window_size, mlp_ratio=mlp_ratio)
        self.norm1 = FastLayerNorm(dim, bias=False)
        self.norm2 = FastLayerNorm(int(dim * mlp_ratio), bias=False)
        self.glu_conv = GLUConvMLP(dim, dim, kernel_size=3, mlp_ratio=1)

    def forward(self, x):
        b, c, h, w = x.shape
        z = x.permute(1, 0, 2, 3).reshape(1, c, b, h, w)
        z = z + self.gmlp(z, self.norm1, self.norm2)
        x = z.permute(0, 2, 1, 3, 4).reshape(b, c, h, w)
        return x + self.glu_conv(x)

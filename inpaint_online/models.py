"""Inpainting networks.

:class:`GatedUNet` — a U-Net of gated convolutions (Yu et al., "Free-Form Image Inpainting
with Gated Convolution"): each layer learns a soft per-pixel gate, so the network can treat
hole and known pixels differently without a hand-made partial-conv mask update. Dilated
gated convs in the bottleneck widen the receptive field for wide holes. It takes masked RGB
+ mask (+ optionally depth) and predicts RGB; :func:`composite` keeps the known pixels.
Any input size works (replicate-padded to a multiple of ``2**levels`` and cropped back).

:class:`TemporalGatedUNet` — the same network run per frame of a clip ``(B, T, C, H, W)``
plus temporal mixing (attention across frames in the bottleneck, 3-tap temporal convs on
the skips), for video inpainting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ModelConfig", "GatedConv", "GatedUNet", "TemporalGatedUNet", "build_model", "composite",
           "prefill_holes", "over_max"]

PREFILLS = ("interp", "pushpull", "background", "dual", "right", "none")


def prefill_holes(x: torch.Tensor, mask: torch.Tensor, mode: str,
                  depth: torch.Tensor | None = None, smooth: int = 8) -> torch.Tensor:
    """A cheap first guess for the holes that the network then corrects.

    ``pushpull`` (default): a smooth fill from every side (:func:`pushpull_fill`; +0.9 dB in
    the holes over ``interp`` on the demo's textured validation). ``background``: push-pull
    from the farther side only, by ``depth`` (:func:`background_pushpull_fill`; the best
    classical fill of true disocclusions measured here). ``dual`` (needs depth): the mean of
    the two — the model built with it is given both and learns, per pixel, how much of each
    to take (:class:`GatedUNet`); its untrained output is this mean. ``right``: copy the
    nearest known pixel to the right — the background side in the training orientation.
    ``interp``: linear interpolation between the nearest known pixels left and right (falls
    back to whichever exists). ``none``: zeros. Without a first guess
    a small net spends most of its early training learning to copy neighbours.
    """
    if mode == "none":
        return x * (1 - mask)
    if mode == "pushpull":
        return pushpull_fill(x, mask, smooth)
    if mode in ("background", "dual"):
        if depth is None:
            raise ValueError(f"model.prefill={mode} fills from the farther side by depth: pass depth")
        bg = background_pushpull_fill(x, mask, depth, smooth=smooth)
        return bg if mode == "background" else 0.5 * (bg + pushpull_fill(x, mask, smooth))
    w = x.shape[-1]
    hole = mask > 0.5
    col = torch.arange(w, device=x.device).view(1, 1, 1, w)
    left = torch.where(hole, -1, col).cummax(dim=3).values
    right = torch.where(hole, w, col).flip(3).cummin(dim=3).values.flip(3)
    has_l, has_r = left >= 0, right < w
    li, ri = left.clamp(min=0), right.clamp(max=w - 1)
    xl = x.gather(3, li.expand(-1, x.shape[1], -1, -1))
    xr = x.gather(3, ri.expand(-1, x.shape[1], -1, -1))
    if mode == "right":
        guess = torch.where(has_r, xr, xl)
    else:
        t = ((col - left).float() / (right - left).clamp(min=1).float())
        both = torch.lerp(xl, xr, t)
        guess = torch.where(has_l & has_r, both, torch.where(has_r, xr, xl))
    guess = torch.where(has_l | has_r, guess, torch.zeros_like(guess))
    return torch.where(hole, guess, x)


def over_max(depth: torch.Tensor) -> torch.Tensor:
    """``depth`` divided by its maximum over each sample (over each clip for ``(B, T, 1, H,
    W)``): the scale the background fill, ``model.depth_norm`` and ``evaluate_stereo`` read
    depth at."""
    return depth / depth.amax(dim=tuple(range(1, depth.dim())), keepdim=True).clamp(min=1e-6)


def pushpull_fill(x: torch.Tensor, mask: torch.Tensor, smooth: int = 8) -> torch.Tensor:
    """A smooth fill of the holes from every side (not only along rows): push-pull.

    Push: halve the known pixels and their weights (2x2 sums) down to one pixel; pull:
    from the coarsest level up, each level's holes take the bilinearly enlarged coarser
    fill, where a pixel is partly known the two are blended by its weight. Then ``smooth``
    3x3 averagings inside the holes remove the block seams. A harmonic-like fill in
    O(log size) fixed-shape operations: no data-dependent loop, no host sync.
    """
    known = (mask <= 0.5).to(x.dtype)
    levels = [(x * known, known)]
    # down to one pixel: a coarsest level of several cells could hold a cell with nothing
    # known (a hole or excluded area spanning half a 2:1 frame), which would pull black in
    while max(levels[-1][0].shape[-2:]) > 1:
        v, w = levels[-1]
        h2, w2 = -(-v.shape[-2] // 2), -(-v.shape[-1] // 2)
        pad = (0, 2 * w2 - v.shape[-1], 0, 2 * h2 - v.shape[-2])
        levels.append((F.avg_pool2d(F.pad(v, pad), 2) * 4, F.avg_pool2d(F.pad(w, pad), 2) * 4))
    v, w = levels[-1]
    cur = v / w.clamp(min=1e-6)
    for v, w in reversed(levels[:-1]):
        up = F.interpolate(cur, size=v.shape[-2:], mode="bilinear", align_corners=False)
        a = w.clamp(max=1)
        cur = a * v / w.clamp(min=1e-6) + (1 - a) * up
    hole = 1 - known
    k = torch.full((x.shape[1], 1, 3, 3), 1 / 9, device=x.device, dtype=x.dtype)
    for _ in range(smooth):
        blur = F.conv2d(F.pad(cur, (1, 1, 1, 1), mode="replicate"), k, groups=x.shape[1])
        cur = x * known + blur * hole
    return x * known + cur * hole


def row_neighbours(hole: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``d`` ``(B, 1, H, W)`` at the nearest known pixel left and right of each pixel on its
    row (a known pixel: its own value); 2 where a row has none on that side."""
    w = d.shape[-1]
    col = torch.arange(w, device=d.device).view(1, 1, 1, w)
    left = torch.where(hole, -1, col).cummax(dim=3).values
    right = torch.where(hole, w, col).flip(3).cummin(dim=3).values.flip(3)
    big = torch.full_like(d, 2.0)
    dl = torch.where(left >= 0, d.gather(3, left.clamp(min=0)), big)
    dr = torch.where(right < w, d.gather(3, right.clamp(max=w - 1)), big)
    return dl, dr


def row_step(mask: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """At each hole pixel, how far apart in depth (over the sample's maximum) the nearest
    known pixels left and right on its row lie: near 1 beside an object far in front of its
    background, 0 where the row has known pixels on one side only; 0 outside holes."""
    hole = mask > 0.5
    dl, dr = row_neighbours(hole, over_max(depth.float()))
    both = hole & (dl <= 1) & (dr <= 1)
    return torch.where(both, (dl - dr).abs(), torch.zeros_like(dl))


def background_pushpull_fill(x: torch.Tensor, mask: torch.Tensor, depth: torch.Tensor,
                             tol: float = 0.02, smooth: int = 8) -> torch.Tensor:
    """Push-pull from the *background* only: what a disocclusion hides is background.

    Each hole pixel's background depth is the smaller (farther) inverse depth of the
    nearest known pixels left and right on its row; those references are spread to the
    surroundings (push-pull), and every known pixel nearer than its local reference by more
    than ``tol`` (the occluder) is left out of the fill. ``depth`` ``(B, 1, H, W)`` inverse
    depth, larger = nearer (any scale: ``tol`` is relative to its per-sample maximum).
    Orientation-free; fixed-shape operations, no host sync.
    """
    hole = mask > 0.5
    d = over_max(depth.float())
    dl, dr = row_neighbours(hole, d)
    ref_at_holes = torch.minimum(dl, dr).clamp(max=1.0)
    ref = pushpull_fill(torch.where(hole, ref_at_holes, torch.zeros_like(d)), (~hole).to(x.dtype), smooth=0)
    occluder = ~hole & (d > ref + tol)
    ext = (hole | occluder).to(x.dtype)
    fill = pushpull_fill(x * (1 - ext), ext, smooth)
    return torch.where(hole, fill, x)


@dataclass
class ModelConfig:
    """The ``model:`` section. ``kind`` names the architecture."""
    kind: str = "gated_unet"
    channels: int = 32                     # width of the first level
    levels: int = 3                        # stride-2 downsamplings
    max_mult: int = 4                      # channel cap: channels * max_mult
    blocks: int = 1                        # extra gated convs per level
    dilations: tuple[int, ...] = (2, 4, 8)  # bottleneck
    use_depth: bool = False                # a 5th input channel: the (masked) depth
    depth_norm: bool = False               # use_depth: that channel divided by its maximum
                                           # (per sample, per clip): the scale the background
                                           # fill reads depth at, whatever the map's own
    prefill: str = "pushpull"              # holes pre-filled before the net: pushpull | background
                                           # (needs depth) | dual (both, blended per pixel by
                                           # the net; needs depth) | interp | right | none
    correction: str = "all"                # dual: where the net's RGB correction goes — all (added
                                           # to the blend of the two fills) | every_side (to the
                                           # every-side fill only, before the blend: where the
                                           # share is 1 the output is the background fill itself)
    share_floor: float = 0.0               # dual: a hole pixel whose row has known pixels on both
                                           # sides farther apart in depth than this (over the
                                           # sample's maximum: an occluder on one side) takes
                                           # the background fill's share 1; 0 = off
    prefill_smooth: int = 32               # 3x3 averagings after push-pull (pushpull, background):
                                           # 32 is level with the 300-step diffusion fill (8: -0.2 dB)
    temporal_heads: int = 4                # temporal_unet: attention heads across frames
    temporal_blocks: int = 1               # temporal_unet: attention blocks in the bottleneck

    def validate(self) -> None:
        if self.prefill not in PREFILLS:
            raise ValueError(f"model.prefill must be one of {PREFILLS}, got {self.prefill!r}")
        if self.kind not in MODELS:
            raise ValueError(f"model.kind must be one of {sorted(MODELS)}, got {self.kind!r}")
        if self.prefill_smooth < 0:
            raise ValueError(f"model.prefill_smooth must be >= 0, got {self.prefill_smooth}")
        if self.correction not in ("all", "every_side"):
            raise ValueError(f"model.correction must be all or every_side, got {self.correction!r}")
        if self.correction != "all" and self.prefill != "dual":
            raise ValueError("model.correction every_side corrects one of two fills: it needs model.prefill=dual")
        if not 0.0 <= self.share_floor <= 1.0:
            raise ValueError(f"model.share_floor must be in [0, 1], got {self.share_floor}")
        if self.share_floor > 0 and self.prefill != "dual":
            raise ValueError("model.share_floor sets the share of the background fill: it needs model.prefill=dual")
        if self.depth_norm and not self.use_depth:
            raise ValueError("model.depth_norm scales the depth input: it needs model.use_depth=true")
        if self.channels < 4 or self.levels < 1 or self.max_mult < 1 or self.blocks < 0:
            raise ValueError("model.channels >= 4, model.levels >= 1, model.max_mult >= 1, "
                             "model.blocks >= 0 are required")


class GatedConv(nn.Module):
    """``act(conv_f(x)) * sigmoid(conv_g(x))`` — one conv with ``2·out`` channels, split."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, 2 * cout, k, stride, padding=dilation * (k // 2),
                              dilation=dilation)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, g = self.conv(x).chunk(2, dim=1)
        return self.act(f) * torch.sigmoid(g)


class GatedUNet(nn.Module):
    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        c = self.config = config or ModelConfig()
        c.validate()
        widths = [c.channels * min(2 ** i, c.max_mult) for i in range(c.levels + 1)]
        self.dual = c.prefill == "dual"
        self.stem = GatedConv(4 + 3 * self.dual + int(c.use_depth), widths[0], 5)
        self.down = nn.ModuleList()
        for i in range(c.levels):
            layers = [GatedConv(widths[i], widths[i + 1], 3, stride=2)]
            layers += [GatedConv(widths[i + 1], widths[i + 1]) for _ in range(c.blocks)]
            self.down.append(nn.Sequential(*layers))
        w = widths[-1]
        self.middle = nn.Sequential(*[GatedConv(w, w, 3, dilation=d) for d in c.dilations])
        self.up = nn.ModuleList()
        for i in reversed(range(c.levels)):
            layers = [GatedConv(widths[i + 1] + widths[i], widths[i])]
            layers += [GatedConv(widths[i], widths[i]) for _ in range(c.blocks)]
            self.up.append(nn.Sequential(*layers))
        # dual: a 4th output channel, the logit of the share of the background fill
        self.head = nn.Conv2d(widths[0], 3 + self.dual, 3, padding=1)
        if c.prefill != "none":    # start as the first guess: a zero residual (dual: half each)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                depth: torch.Tensor | None = None, blend: bool = False):
        """``x`` ``(B, 3, H, W)`` masked RGB in [0, 1], ``mask`` ``(B, 1, H, W)`` (1 = hole),
        ``depth`` ``(B, 1, H, W)`` when the model was built with ``use_depth`` or
        ``prefill=background`` (ignored otherwise). Clips
        ``(B, T, C, H, W)`` are accepted too (frames are independent here; the temporal
        model mixes them). Returns the predicted RGB (not yet composited); with ``blend``
        (``prefill=dual`` only) also the two fills as the net blended them, before its
        correction and ``share_floor`` (what ``loss.blend_l1`` scores)."""
        if blend and not self.dual:
            raise ValueError("blend=True needs a model built with model.prefill=dual")
        clip = x.dim() == 5
        t = x.shape[1] if clip else 1
        c = self.config
        din = depth
        if c.use_depth and c.depth_norm and depth is not None:
            din = over_max(depth)
        if clip:
            x, mask = x.flatten(0, 1), mask.flatten(0, 1)
            depth = depth.flatten(0, 1) if depth is not None else None
            din = din.flatten(0, 1) if din is not None else None
        if x.dim() != 4 or x.shape[1] != 3 or mask.shape[1] != 1 or mask.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"expected x (B, 3, H, W) and mask (B, 1, H, W); got "
                             f"{tuple(x.shape)} and {tuple(mask.shape)}")
        if self.dual:
            if depth is None:
                raise ValueError("model.prefill=dual fills from the farther side by depth: pass depth")
            guess = pushpull_fill(x, mask, c.prefill_smooth)
            bg = background_pushpull_fill(x, mask, depth, smooth=c.prefill_smooth)
            parts = [guess * 2 - 1, bg * 2 - 1, mask]
        else:
            guess = prefill_holes(x, mask, c.prefill, depth, c.prefill_smooth)
            parts = [guess * 2 - 1, mask]
        if c.use_depth:
            if depth is None:
                raise ValueError("this model was built with use_depth=True: pass depth")
            parts.append(din * 2 - 1)
        h, w = x.shape[-2:]
        m = 2 ** self.config.levels
        ph, pw = (-h) % m, (-w) % m
        z = torch.cat(parts, dim=1)
        if ph or pw:
            z = F.pad(z, (0, pw, 0, ph), mode="replicate")
        z = self.stem(z)
        skips = []
        for down in self.down:
            skips.append(z)
            z = down(z)
        z = self.mix_middle(self.middle(z), t)
        for i, up in enumerate(self.up):
            s = self.mix_skip(len(self.up) - 1 - i, skips.pop(), t)
            z = F.interpolate(z, size=s.shape[-2:], mode="nearest")
            z = up(torch.cat([z, s], dim=1))
        out = self.head(z)[..., :h, :w]
        if self.dual:              # the two fills blended per pixel, and the residual
            learned = torch.sigmoid(out[:, 3:])
            share = learned
            if c.share_floor > 0:      # rows with an occluder on one side: the background's
                share = torch.where(row_step(mask, depth) > c.share_floor, torch.ones_like(share), share)
            if c.correction == "every_side":
                out = torch.lerp(guess + out[:, :3], bg, share)
            else:
                out = torch.lerp(guess, bg, share) + out[:, :3]
            # the net's own choice, floor or not: what loss.blend_l1 scores, so the share is
            # still learned where the floor decides the output
            guess = torch.lerp(guess, bg, learned)
        else:      # a residual on the first guess (plain output when there is none)
            out = guess + out if c.prefill != "none" else out * 0.5 + 0.5
        if clip:
            out, guess = out.unflatten(0, (-1, t)), guess.unflatten(0, (-1, t))
        return (out, guess) if blend else out

    def mix_middle(self, z: torch.Tensor, t: int) -> torch.Tensor:
        return z

    def mix_skip(self, level: int, s: torch.Tensor, t: int) -> torch.Tensor:
        return s


def _to_clips(z: torch.Tensor, t: int) -> torch.Tensor:
    """``(B·T, C, H, W)`` → ``(B, C, T, H, W)``."""
    return z.unflatten(0, (-1, t)).transpose(1, 2)


def _from_clips(z: torch.Tensor) -> torch.Tensor:
    return z.transpose(1, 2).flatten(0, 1)


class TemporalAttention(nn.Module):
    """Self-attention across the T frames at every bottleneck position (sequences of length
    T, one per pixel), with a learned per-frame position. The output projection starts at
    zero, so a fresh block is the identity and the net starts as the per-frame model."""

    def __init__(self, dim: int, heads: int, max_frames: int = 64):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.pos = nn.Parameter(torch.zeros(max_frames, dim))
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)

    def forward(self, z: torch.Tensor, t: int) -> torch.Tensor:
        if t > self.pos.shape[0]:
            raise ValueError(f"clips of at most {self.pos.shape[0]} frames, got {t}")
        b, c, _, h, w = (zc := _to_clips(z, t)).shape
        seq = zc.permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)
        q = self.norm(seq) + self.pos[:t]
        out, _ = self.attn(q, q, q, need_weights=False)
        seq = seq + out
        return _from_clips(seq.view(b, h, w, t, c).permute(0, 4, 3, 1, 2))


class TemporalConv(nn.Module):
    """Residual 3-tap convolution over time (a (3, 1, 1) Conv3d), zero-initialised."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv3d(dim, dim, (3, 1, 1), padding=(1, 0, 0))
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, z: torch.Tensor, t: int) -> torch.Tensor:
        zc = _to_clips(z, t)
        return _from_clips(zc + self.conv(zc))


class TemporalGatedUNet(GatedUNet):
    """The gated U-Net per frame + temporal mixing: attention across frames in the
    bottleneck (long-range: content revealed in other frames) and a 3-tap temporal conv on
    every skip connection (full resolution: steadiness between neighbouring frames)."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__(config)
        c = self.config
        widths = [c.channels * min(2 ** i, c.max_mult) for i in range(c.levels + 1)]
        if widths[-1] % c.temporal_heads:
            raise ValueError(f"model.temporal_heads={c.temporal_heads} must divide the bottleneck "
                             f"width {widths[-1]}")
        self.temporal = nn.ModuleList([TemporalAttention(widths[-1], c.temporal_heads)
                                       for _ in range(c.temporal_blocks)])
        self.skip_mix = nn.ModuleList([TemporalConv(wd) for wd in widths[:-1]])

    def mix_middle(self, z, t):
        for blk in self.temporal:
            z = blk(z, t)
        return z

    def mix_skip(self, level, s, t):
        return self.skip_mix[level](s, t)


def _iw3_image(config: ModelConfig) -> nn.Module:
    from .iw3net import LightInpaintV1
    return LightInpaintV1()


def _iw3_video(config: ModelConfig) -> nn.Module:
    from .iw3net import LightVideoInpaintV1
    return LightVideoInpaintV1()


# kind -> builder. The iw3_* kinds are iw3's own networks (docs/iw3.md): saved as nunif model
# files iw3 loads; they take no other model.* setting (their first guess is theirs)
MODELS = {"gated_unet": GatedUNet, "temporal_unet": TemporalGatedUNet,
          "iw3_light_inpaint_v1": _iw3_image, "iw3_light_video_inpaint_v1": _iw3_video}
IW3_KINDS = ("iw3_light_inpaint_v1", "iw3_light_video_inpaint_v1")


def build_model(config: ModelConfig) -> nn.Module:
    config.validate()
    return MODELS[config.kind](config)


def model_offset(model: nn.Module) -> int:
    """Pixels on each side of a model's output that are not scored (iw3's ``i2i_offset``:
    16 for its light networks, whose borders lack context; 0 for this project's)."""
    return int(getattr(model, "i2i_offset", 0))


def model_config_dict(config: ModelConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def composite(x: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Known pixels from ``x``, hole pixels from ``pred``."""
    return x * (1 - mask) + pred * mask

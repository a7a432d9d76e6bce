"""iw3's light inpainting networks (nunif ``inpaint.light_inpaint_v1`` and
``inpaint.light_video_inpaint_v1``) as models of this project (docs/iw3.md).

Same layers, parameter names and shapes as nunif's, so their ``state_dict``\\s are each
other's; same input conventions:

* the input is the image with its holes set to 0 and the hard mask (1 = hole); the model's
  ``preprocess`` blurs the mask (15-tap Gaussian, added to the hard mask and clipped: a soft
  band around every hole) and the output is ``x·(1 − m) + net·m`` with that soft mask, so
  known pixels near a hole are blended too;
* values in [0, 1] (the net sees ``2x − 1``); the frame is replicate-padded to a multiple of
  64 px and cropped back;
* right-view orientation: the background lies right of every hole (iw3 mirrors left views
  in and out, as this project's collate and ``stereo`` do);
* the last 16 px on every side (``i2i_offset``) have too little context: iw3's trainer scores
  only the inside, and so do this project's loss, validation and ``compare``
  (:func:`inner`), while inference uses the whole output (iw3's ``infer`` does too);
* the video model takes the frames of clips of exactly 12 (``SEQ_LEN``) on the batch axis:
  its temporal blocks mix each run of 12 consecutive frames.

Here ``forward(x, mask, depth=None)`` is this project's model interface (``depth`` unused):
the preprocessing and the whole-frame output of iw3's ``infer`` without its optional mask
closing/dilation (the training masks are closed already).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import (
    GMLP3DBlock,
    GMLPBlock,
    ReplicatePad,
    basic_init,
    gaussian_blur_mask,
    icnr_init,
    replicate_pad,
)

__all__ = ["LightInpaintV1", "LightVideoInpaintV1", "SEQ_LEN", "inner"]

SEQ_LEN = 12        # frames the video model mixes at a time (its temporal window)


def inner(t: torch.Tensor, offset: int) -> torch.Tensor:
    """``t`` without ``offset`` pixels on every side (the part an offset model is scored on)."""
    return t if offset <= 0 else t[..., offset:-offset, offset:-offset]


class _Light(nn.Module):
    i2i_offset = 16           # output px on each side iw3 does not score
    downscaling = 4
    mod = 16

    def preprocess(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = mask.to(x.dtype)
        x = x * (1 - mask)
        return x, (gaussian_blur_mask(mask) + mask).clamp(0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                depth: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, 3, H, W)`` (or clips ``(B, T, 3, H, W)``) in [0, 1], ``mask`` 1 = hole →
        the filled frames, the same shape (holes and the soft band around them replaced)."""
        clip = x.dim() == 5
        if clip:
            n, t = x.shape[:2]
            x, mask = x.flatten(0, 1), mask.flatten(0, 1)
        if x.dim() != 4 or x.shape[1] != 3 or mask.shape[1] != 1 or mask.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"expected x (B, 3, H, W) and mask (B, 1, H, W); got "
                             f"{tuple(x.shape)} and {tuple(mask.shape)}")
        x, m = self.preprocess(x, mask)
        out = self.fill(x, m)
        return out.unflatten(0, (n, t)) if clip else out

    def fill(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """iw3's ``forward(x, mask, skip_i2i_offset=True)`` on preprocessed inputs."""
        src = x
        h, w = x.shape[-2:]
        m = self.mod * self.downscaling
        pw, ph = m - w % m, m - h % m          # as iw3: a whole block even when it fits
        z = replicate_pad((x - 0.5) / 0.5, (0, pw, 0, ph))
        mp = replicate_pad(mask, (0, pw, 0, ph))
        z = self.net(z, mp)[..., :h, :w]
        out = src * (1 - mask) + z * mask
        return out if self.training else out.clamp(0, 1)

    def hole_tokens(self, mask: torch.Tensor) -> torch.Tensor:
        """Where a 4x4 patch is (almost) all hole: its feature is replaced by a learned one."""
        return F.pixel_unshuffle(mask, self.downscaling).amax(dim=1, keepdim=True) > 0.99


class LightInpaintV1(_Light):
    """iw3's image inpainting network (nunif ``inpaint.light_inpaint_v1``, ~1.3 M
    parameters): 4x4 patches, a windowed-gMLP encoder at 1/4 and 1/8 scale, one decoder block."""

    nunif_name = "inpaint.light_inpaint_v1"

    def __init__(self):
        super().__init__()
        c, c2, pack = 96, 192, self.downscaling ** 2
        self.mask_bias = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.patch = nn.Sequential(nn.Conv2d(3 * pack, c, kernel_size=1),
                                   nn.LeakyReLU(0.2, inplace=True))
        self.enc1 = GMLPBlock(c, window_size=16, mlp_ratio=2, shift=True)
        self.down = nn.Conv2d(c, c2, kernel_size=2, stride=2)
        self.enc2 = nn.Sequential(*[GMLPBlock(c2, window_size=8, mlp_ratio=2, shift=bool(i % 2))
                                    for i in range(4)])
        self.up = nn.Conv2d(c2, c * 4, kernel_size=1)
        self.dec1 = GMLPBlock(c, window_size=16, mlp_ratio=2, shift=False)
        self.to_image = nn.Sequential(ReplicatePad(1), nn.Conv2d(c, 3 * pack, kernel_size=3))
        basic_init(self.patch)
        icnr_init(self.to_image[-1], self.downscaling)
        nn.init.trunc_normal_(self.mask_bias, 0, 0.01)

    def net(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.patch(F.pixel_unshuffle(x, self.downscaling))
        x = torch.where(self.hole_tokens(mask), self.mask_bias.to(x.dtype), x)
        x1 = self.enc1(x)
        x2 = F.pixel_shuffle(self.up(self.enc2(self.down(x1))), 2)
        x = self.to_image(self.dec1(x1 + x2))
        return F.pixel_shuffle(x, self.downscaling)


class LightVideoInpaintV1(_Light):
    """iw3's video inpainting network (nunif ``inpaint.light_video_inpaint_v1``): the image
    network's plan with a 4x4 strided patch conv and, at 1/8 scale, two gMLPs across each
    run of 12 frames between the spatial blocks."""

    nunif_name = "inpaint.light_video_inpaint_v1"

    def __init__(self, base_dim: int = 96, lv2_mlp_ratio: int = 1):
        super().__init__()
        self.kwargs = {"base_dim": base_dim, "lv2_mlp_ratio": lv2_mlp_ratio}
        c, c2, pack = base_dim, base_dim * 2, self.downscaling ** 2
        self.mask_bias = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.patch = nn.Conv2d(3, c, kernel_size=self.downscaling, stride=self.downscaling)
        self.enc1 = GMLPBlock(c, window_size=16, mlp_ratio=2, shift=False)
        self.down = nn.Conv2d(c, c2, kernel_size=2, stride=2)
        self.enc2 = nn.ModuleList([
            GMLPBlock(c2, window_size=(8, 8), mlp_ratio=lv2_mlp_ratio, shift=True),
            GMLP3DBlock(c2, window_size=(SEQ_LEN, 1, 1), mlp_ratio=2),
            GMLPBlock(c2, window_size=(8, 8), mlp_ratio=lv2_mlp_ratio, shift=False),
            GMLP3DBlock(c2, window_size=(SEQ_LEN, 1, 1), mlp_ratio=2),
            GMLPBlock(c2, window_size=(8, 8), mlp_ratio=lv2_mlp_ratio, shift=True),
        ])
        self.up = nn.Conv2d(c2, c * 4, kernel_size=1)
        self.dec1 = GMLPBlock(c, window_size=16, mlp_ratio=2, shift=False)
        self.to_image = nn.Conv2d(c, 3 * pack, kernel_size=1)
        basic_init(self.patch)
        icnr_init(self.to_image, self.downscaling)
        nn.init.trunc_normal_(self.mask_bias, 0, 0.01)

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                depth: torch.Tensor | None = None) -> torch.Tensor:
        """As the image model's; the frames are clips ``(B, T, 3, H, W)`` (or the T frames of
        one clip ``(T, 3, H, W)``). T that is not a multiple of 12 is padded with copies of
        the first and last frames, as iw3's ``infer`` does, and cut back."""
        clip = x.dim() == 5
        xs, ms = (x, mask) if clip else (x[None], mask[None])
        t = xs.shape[1]
        pad = (-t) % SEQ_LEN
        if pad:
            a, b = pad // 2, pad - pad // 2
            xs = torch.cat([xs[:, :1].expand(-1, a, -1, -1, -1), xs,
                            xs[:, -1:].expand(-1, b, -1, -1, -1)], 1)
            ms = torch.cat([ms[:, :1].expand(-1, a, -1, -1, -1), ms,
                            ms[:, -1:].expand(-1, b, -1, -1, -1)], 1)
        out = super().forward(xs, ms)
        if pad:
            out = out[:, a:a + t]
        return out if clip else out[0]

    def net(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # every op is per frame except the temporal blocks, whose windows are runs of 12
        # frames of the batch axis: N clips of 12 frames are N independent sequences
        x = F.leaky_relu(self.patch(x), 0.1)
        x = torch.where(self.hole_tokens(mask), self.mask_bias.to(x.dtype), x)
        x1 = self.enc1(x)
        x2 = self.down(x1)
        for blk in self.enc2:
            x2 = blk(x2)
        x2 = F.pixel_shuffle(self.up(x2), 2)
        x = self.to_image(self.dec1(x1 + x2))
        return F.pixel_shuffle(x, self.downscaling)

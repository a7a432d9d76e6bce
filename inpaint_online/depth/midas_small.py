"""MiDaS v2.1 small (``MiDaS_small``) built natively from timm, with the official key layout.

Why our own: the torch.hub ``MiDaS_small`` entry point fetches its backbone from a second
hub repository, which cannot work offline (docs/design.md, "Stages"). This module builds the same
network — timm's ``tf_efficientnet_lite3`` encoder split into MiDaS's four stages under
``pretrained.``, MiDaS's RefineNet-style decoder under ``scratch.`` — so the official
``midas_v21_small_256.pt`` (MIT licence) loads with ``strict=True``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHTS_FILE = "midas_v21_small_256.pt"
WEIGHTS_URL = ("https://github.com/isl-org/MiDaS/releases/download/v2_1/" + WEIGHTS_FILE)


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=True)

    def forward(self, x):
        out = self.conv1(F.relu(x))
        out = self.conv2(F.relu(out))
        return out + x


class FeatureFusionBlock(nn.Module):
    """Fuse a coarser path with a skip feature, upsample ×2, halve the channels."""

    def __init__(self, features: int, out_features: int):
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, out_features, 1, bias=True)

    def forward(self, x, skip=None):
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class _Upsample(nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class MidasSmall(nn.Module):
    """``(B, 3, H, W)`` normalised RGB (H, W multiples of 32) → ``(B, H, W)`` relative
    inverse depth (larger = nearer, unnormalised)."""

    input_size = 256
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)

    def __init__(self, features: int = 64):
        super().__init__()
        import timm

        eff = timm.create_model("tf_efficientnet_lite3", pretrained=False)
        self.pretrained = nn.Module()
        # index 2 was the stem activation in the original; timm's bn1 applies it itself
        self.pretrained.layer1 = nn.Sequential(eff.conv_stem, eff.bn1, nn.Identity(),
                                               *eff.blocks[0:2])
        self.pretrained.layer2 = nn.Sequential(*eff.blocks[2:3])
        self.pretrained.layer3 = nn.Sequential(*eff.blocks[3:5])
        self.pretrained.layer4 = nn.Sequential(*eff.blocks[5:9])
        in_ch = (32, 48, 136, 384)
        out_ch = (features, features * 2, features * 4, features * 8)
        self.scratch = nn.Module()
        for i, (ci, co) in enumerate(zip(in_ch, out_ch), start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(ci, co, 3, padding=1, bias=False))
        self.scratch.refinenet4 = FeatureFusionBlock(out_ch[3], out_ch[2])
        self.scratch.refinenet3 = FeatureFusionBlock(out_ch[2], out_ch[1])
        self.scratch.refinenet2 = FeatureFusionBlock(out_ch[1], out_ch[0])
        self.scratch.refinenet1 = FeatureFusionBlock(out_ch[0], out_ch[0])
        self.scratch.output_conv = nn.Sequential(
            nn.Conv2d(features, features // 2, 3, padding=1), _Upsample(),
            nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(True),
            nn.Conv2d(32, 1, 1), nn.ReLU(True))

    def forward(self, x):
        p, s = self.pretrained, self.scratch
        l1 = p.layer1(x)
        l2 = p.layer2(l1)
        l3 = p.layer3(l2)
        l4 = p.layer4(l3)
        path = s.refinenet4(s.layer4_rn(l4))
        path = s.refinenet3(path, s.layer3_rn(l3))
        path = s.refinenet2(path, s.layer2_rn(l2))
        path = s.refinenet1(path, s.layer1_rn(l1))
        return s.output_conv(path).squeeze(1)


def load_midas_small(weights: str | None) -> MidasSmall:
    """Build the network; load ``weights`` (a state dict file) strictly when given."""
    model = MidasSmall()
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{weights}: not a MiDaS v2.1 small checkpoint "
                             f"({str(e).splitlines()[0]})") from None
    return model.eval()

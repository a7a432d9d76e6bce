"""A stand-in for a local clone of intel-isl/MiDaS: the same entry points, built from timm
with random weights, so the real torch.hub(source="local") loading path runs offline."""
dependencies = ["torch", "timm"]

import torch
import torch.nn as nn
import torch.nn.functional as F


class _TinyDPT(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        import timm
        self.pretrained = timm.create_model(backbone, pretrained=False, features_only=True,
                                            out_indices=(1, 2))
        chs = self.pretrained.feature_info.channels()
        self.head = nn.Conv2d(sum(chs), 1, 1)

    def forward(self, x):
        f1, f2 = self.pretrained(x)
        f2 = F.interpolate(f2, f1.shape[-2:], mode="bilinear", align_corners=False)
        d = F.relu(self.head(torch.cat([f1, f2], 1)))
        return F.interpolate(d, x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def MiDaS_small(pretrained=True, **kwargs):
    from inpaint_online.depth.midas_small import MidasSmall
    return MidasSmall()


def DPT_Hybrid(pretrained=True, **kwargs):
    return _TinyDPT("resnet10t")


def DPT_Large(pretrained=True, **kwargs):
    return _TinyDPT("resnet10t")

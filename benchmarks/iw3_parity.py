"""Parity of method="iw3" with nunif's own nonwarp_mask (not part of the test suite: nunif is
not a dependency). Needs a checkout of nunif's files on the path:

    git clone https://github.com/nagadomi/nunif /tmp/nunif   # or any snapshot
    NUNIF=/tmp/nunif python benchmarks/iw3_parity.py

Prints per photo (fallback depth) and (divergence, convergence): IoU with nunif's mask
(> 0 = hole), the share of equal pixels (and of equal layered labels), hole fractions, and
the IoU between our two methods.
"""
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.environ.get("NUNIF", "/tmp/nunif"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inpaint_online.bundled import photo_depth  # noqa: E402
from inpaint_online.warp import occlusion_mask  # noqa: E402


def iou(a, b):
    return ((a & b).sum() / (a | b).sum().clamp(min=1)).item()


def main():
    from iw3.forward_warp import nonwarp_mask  # nunif's code, from $NUNIF
    for name in ["coffee.png", "astronaut.png", "chelsea.png", "rocket.jpg"]:
        d = photo_depth(name)
        h, w = d.shape[-2:]
        for div, conv in [(2, 0), (5, 0.5), (8, 1), (10, 0.3)]:
            _, m = nonwarp_mask(torch.zeros(1, 3, h, w), d.clone(), float(div), float(conv), view="right")
            theirs = m > 0
            ours, lay = occlusion_mask(d, float(div), float(conv), "right", closing=None,
                                       method="iw3", return_layered=True)
            geo = occlusion_mask(d, float(div), float(conv), "right", closing=None)
            print(f"{name:14s} div={div:>4} conv={conv:<4} iw3 IoU={iou(ours, theirs):.4f} "
                  f"equal={(theirs == ours).float().mean().item() * 100:.4f}% "
                  f"layered equal={((m == 0.5) == lay).float().mean().item() * 100:.4f}% "
                  f"holes nunif={theirs.float().mean():.4f} geometric={geo.float().mean():.4f} "
                  f"IoU(geometric, iw3)={iou(geo, theirs):.3f}")


if __name__ == "__main__":
    main()

"""Writes docs/figures/mask_methods.png: where method="geometric" and method="iw3" differ.

A real photo (scikit-image 'chelsea') with the fallback backend's depth, right view,
divergence 8 %, convergence 0.5, no closing. Colours over the darkened photo: white = both
methods, green = geometric only, magenta = iw3 only (plain holes), blue = iw3's layered
holes. Left: the whole frame; right: a 3x zoom around the most disputed area.

    python benchmarks/mask_figure.py [--out docs/figures/mask_methods.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inpaint_online.bundled import photo_depth, real_image  # noqa: E402
from inpaint_online.warp import occlusion_mask  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/figures/mask_methods.png")
    ap.add_argument("--image", default="chelsea.png")
    ap.add_argument("--divergence", type=float, default=8.0)
    ap.add_argument("--convergence", type=float, default=0.5)
    args = ap.parse_args(argv)
    img = real_image(args.image)[0].permute(1, 2, 0).numpy()
    d = photo_depth(args.image)
    geo = occlusion_mask(d, args.divergence, args.convergence, "right", closing=None)[0, 0].numpy()
    iw3, lay = occlusion_mask(d, args.divergence, args.convergence, "right", closing=None,
                              method="iw3", return_layered=True)
    iw3, lay = iw3[0, 0].numpy(), lay[0, 0].numpy()
    out = img * 0.45
    colours = [(geo & iw3, (1, 1, 1)), (geo & ~iw3, (0.1, 1, 0.1)),
               (iw3 & ~geo & ~lay, (1, 0.1, 1)), (lay & ~geo, (0.2, 0.5, 1))]
    for sel, c in colours:
        out[sel] = c
    h, w = geo.shape
    # zoom: the 64x64 window with the most pixels where the methods disagree
    diff = torch.from_numpy((geo ^ iw3).astype(np.float32))[None, None]
    score = torch.nn.functional.avg_pool2d(diff, 64, stride=8)[0, 0]
    y, x = np.unravel_index(int(score.argmax()), score.shape)
    y, x = y * 8, x * 8
    full = Image.fromarray((out * 255).astype(np.uint8))
    zoom = full.crop((x, y, x + 64, y + 64)).resize((h, h), Image.NEAREST)
    draw = ImageDraw.Draw(full)
    draw.rectangle((x, y, x + 63, y + 63), outline=(255, 200, 0))
    canvas = Image.new("RGB", (w + 8 + h, h + 28), (255, 255, 255))
    canvas.paste(full, (0, 28))
    canvas.paste(zoom, (w + 8, 28))
    t = ImageDraw.Draw(canvas)
    t.text((4, 4), f"{args.image} right view, div {args.divergence:g}% conv {args.convergence:g}: "
           f"white both  green geometric only  magenta iw3 only  blue iw3 layered", fill=(0, 0, 0))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    n = lambda m: int(m.sum())  # noqa: E731
    print(f"{args.out}: geometric {n(geo)} px, iw3 {n(iw3)} px (layered {n(lay)}), both {n(geo & iw3)}, "
          f"IoU {n(geo & iw3) / max(n(geo | iw3), 1):.3f}")


if __name__ == "__main__":
    main()

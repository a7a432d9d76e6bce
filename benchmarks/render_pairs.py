"""Render stereo pairs with a known answer from bundled photos, in Middlebury's layout, for
``python -m inpaint_online.evaluate_stereo --pairs DIR``.

Each pair: a background photo on a slanted plane (disparity ramping ``--bg-disparity``
left to right) behind a foreground cut from another photo by a matte (scikit-image's horse
silhouette, or an ellipse), at ``--fg-disparity``. The right view is rendered layer by layer
(:func:`inpaint_online.evaluate_stereo.render_layered_pair`), so what the foreground hides
in the left view is known. Holes are about ``fg - bg`` pixels wide: the defaults give
44-50 px on 480-px frames (~10 % of the width, a strong conversion).

    python benchmarks/render_pairs.py --out runs/pairs_wide
    python -m inpaint_online.evaluate_stereo --checkpoint CKPT --pairs runs/pairs_wide --out runs/eval_wide

The backgrounds default to the demo config's held-out photos (chelsea, rocket); scikit-image's
own stereo pair is never used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inpaint_online.bundled import skimage_data_dir  # noqa: E402
from inpaint_online.evaluate_stereo import render_layered_pair  # noqa: E402

W, H = 480, 320
FOREGROUNDS = ["astronaut.png", "coffee.png", "camera.png"]


def photo(name: str) -> np.ndarray:
    """A bundled photo as RGB, scaled to cover W x H and centre-cropped."""
    im = Image.open(skimage_data_dir() / name).convert("RGB")
    f = max(W / im.width, H / im.height)
    im = im.resize((max(W, round(im.width * f)), max(H, round(im.height * f))), Image.BICUBIC)
    x, y = (im.width - W) // 2, (im.height - H) // 2
    return np.asarray(im.crop((x, y, x + W, y + H)))


def matte(kind: str, k: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    if kind == "horse":
        horse = Image.open(skimage_data_dir() / "horse.png").convert("L").resize((300, 196))
        h = np.asarray(horse) < 128
        if k % 2:
            h = h[:, ::-1]
        m[70:266, 70:370] = h
    else:
        yy, xx = np.mgrid[:H, :W]
        m = (yy - 170) ** 2 / 110 ** 2 + (xx - 220) ** 2 / 130 ** 2 < 1
    return m


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--backgrounds", nargs="+", default=["chelsea.png", "rocket.jpg"])
    ap.add_argument("--fg-disparity", type=float, default=54.0)
    ap.add_argument("--bg-disparity", default="4:10", help="lo:hi, a ramp from left to right")
    args = ap.parse_args(argv)
    if any("motorcycle" in b for b in args.backgrounds):
        print("render_pairs: scikit-image's stereo pair is reserved for independent checks", file=sys.stderr)
        return 2
    lo, hi = (float(v) for v in args.bg_disparity.split(":"))
    out = Path(args.out)
    k = 0
    for bg in args.backgrounds:
        for kind in ("horse", "ellipse"):
            fg = FOREGROUNDS[k % len(FOREGROUNDS)]
            p = render_layered_pair(photo(bg), photo(fg), matte(kind, k), np.linspace(lo, hi, W),
                                    args.fg_disparity)
            d = out / f"{Path(bg).stem}_{kind}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(p.left).save(d / "im0.png")
            Image.fromarray(p.right).save(d / "im1.png")
            with open(d / "disp0.pfm", "wb") as f:
                f.write(f"Pf\n{W} {H}\n-1.0\n".encode())
                f.write(np.flipud(p.disparity).astype("<f4").tobytes())
            print(f"{d}: background {bg}, foreground {fg} ({kind})")
            k += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

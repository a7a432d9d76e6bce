"""The hole mask of one image and its depth, as training makes it — without writing code.

    python -m inpaint_online.masks --image photo.png --depth photo_depth.png \\
        --divergence 5 --convergence 0.5 [--view right|left] --out photo_mask.png
    python -m inpaint_online.inpaint --checkpoint CKPT --image photo.png --mask photo_mask.png \\
        --output filled.png [--view left]

The mask marks the pixels of the image (at their original position, in the image's own
orientation) that the other eye's view cannot see: the disocclusions a 2D→3D converter must
fill when this image becomes the ``--view`` eye — exactly the training pairs' masks
(:func:`inpaint_online.warp.occlusion_mask`, closed like them). ``--divergence`` is % of
the image width and ``--convergence`` 0 (far plane on the screen) to 1 (near), as in iw3.
Beside the mask it writes ``OUT_overlay.png``: the image darkened, holes in magenta, so the
mask can be judged by eye. The hole count is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from .errors import describe, show
from .fsutil import check_output_file, save_image
from .inference import load_depth_file
from .media import MediaError, load_image
from .pictures import hole_overlay, with_legend
from .warp import MASK_METHODS, occlusion_mask

__all__ = ["make_mask", "overlay", "main"]


def make_mask(depth: np.ndarray, divergence: float, convergence: float, view: str = "right",
              *, method: str = "geometric", closing: int = 5) -> np.ndarray:
    """Bool ``(H, W)`` hole mask of inverse depth ``(H, W)`` in [0, 1] (1 = near)."""
    d = torch.from_numpy(np.ascontiguousarray(depth, np.float32))[None, None]
    m = occlusion_mask(d, divergence, convergence, view, (closing, closing) if closing else None,
                       method=method)
    return m[0, 0].numpy()


def overlay(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image darkened to 60 %, holes painted magenta: ``uint8 (H, W, 3)``."""
    return hole_overlay(rgb.astype(np.float32) * 0.6, mask, alpha=1.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inpaint_online.masks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", required=True)
    ap.add_argument("--depth", required=True, help="depth/disparity map (.npy, 8/16-bit .png, .pfm)")
    ap.add_argument("--depth-kind", choices=["disparity", "depth"], default="disparity",
                    help="disparity/inverse depth (default) or depth (larger = farther)")
    ap.add_argument("--divergence", type=float, required=True,
                    help="stereo strength in %% of the image width (iw3's divergence)")
    ap.add_argument("--convergence", type=float, required=True, help="0 = far plane on screen, 1 = near")
    ap.add_argument("--view", choices=["right", "left"], default="right")
    ap.add_argument("--method", choices=MASK_METHODS, default="geometric")
    ap.add_argument("--closing", type=int, default=5, help="closing kernel (odd; 0 = none)")
    ap.add_argument("--out", required=True, help="mask PNG (0 / 255); OUT_overlay.png beside it")
    args = ap.parse_args(argv)
    if not 0 <= args.divergence <= 20 or not 0 <= args.convergence <= 1:
        print("masks: error: --divergence must be in [0, 20] (%) and --convergence in [0, 1]",
              file=sys.stderr)
        return 2
    if args.closing and (args.closing < 1 or args.closing % 2 == 0):
        print(f"masks: error: --closing must be odd (or 0 for none), got {args.closing}",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    side = out.with_name(f"{out.stem}_overlay.png")
    try:
        check_output_file(out)
        rgb = load_image(args.image)
        depth = load_depth_file(Path(args.depth), args.depth_kind, rgb.shape[:2])
        mask = make_mask(depth, args.divergence, args.convergence, args.view,
                         method=args.method, closing=args.closing)
        save_image(out, mask.astype(np.uint8) * 255)
        save_image(side, with_legend(overlay(rgb, mask), (
            f"holes magenta: {args.view} view, divergence {args.divergence}%, convergence "
            f"{args.convergence}, {args.method}, {100 * mask.mean():.2f}% of the image")))
    except (MediaError, ValueError, OSError) as e:
        print(f"masks: error: {describe(e)}", file=sys.stderr)
        return 2
    print(f"{show(args.image)}: {int(mask.sum())} hole pixels ({100 * mask.mean():.2f}% of the "
          f"image), {args.view} view, divergence {args.divergence}%, convergence "
          f"{args.convergence}, {args.method}; wrote {show(out)} and {show(side)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

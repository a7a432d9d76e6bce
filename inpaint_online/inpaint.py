"""Fill masked regions of images with a trained checkpoint.

    python -m inpaint_online.inpaint --checkpoint runs/demo/checkpoints/best.pt \\
        --image photo.png --mask photo_mask.png --output filled.png
    python -m inpaint_online.inpaint --checkpoint CKPT --image DIR --mask MASKDIR --output OUTDIR

Masks: any image; non-zero = hole (iw3's 127 "layered" holes count as holes). In folder mode
the mask of ``NAME.ext`` is ``MASKDIR/NAME.*`` or ``MASKDIR/NAME_M.png`` (an exported
dataset: ``NAME_C.png`` pairs with ``NAME_M.png``). The model expects the background to the
right of each hole (a right view's holes); ``--view left`` mirrors in and out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .checkpoint import CheckpointError
from .inference import image_to_tensor, inpaint, load_depth, load_model, tensor_to_image
from .media import IMAGE_EXTS, MediaError, load_image


def find_mask(image: Path, mask_dir: Path) -> Path | None:
    stem = image.stem
    names = [stem + e for e in IMAGE_EXTS] + [stem + "_M.png", stem.removesuffix("_C") + "_M.png"]
    for n in names:
        p = mask_dir / n
        if p.is_file() and p != image:
            return p
    return None


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    try:
        with Image.open(path) as im:
            m = np.asarray(im.convert("L"))
    except Exception as e:
        raise MediaError(f"{path}: cannot read mask ({type(e).__name__}: {e})") from None
    if m.shape != shape:
        raise MediaError(f"{path}: mask is {m.shape[1]}x{m.shape[0]} but the image is "
                         f"{shape[1]}x{shape[0]}")
    return m > 0


def pairs(image: Path, mask: Path, output: Path) -> list[tuple[Path, Path, Path]]:
    if image.is_dir():
        if not mask.is_dir():
            raise MediaError(f"{mask}: --image is a folder, so --mask must be one too")
        out = []
        for p in sorted(image.iterdir()):
            if p.suffix.lower() not in IMAGE_EXTS or p.stem.endswith(("_M", "_I")):
                continue
            m = find_mask(p, mask)
            if m is None:
                print(f"skipping {p}: no mask for it in {mask}", file=sys.stderr)
                continue
            out.append((p, m, output / (p.stem + ".png")))
        if not out:
            raise MediaError(f"{image}: no image with a mask in {mask}")
        return out
    return [(image, mask, output)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inpaint_online.inpaint", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--image", required=True, help="image file or folder")
    ap.add_argument("--mask", required=True, help="mask file or folder (non-zero = hole)")
    ap.add_argument("--output", required=True, help="output file (or folder for folder input)")
    ap.add_argument("--depth", help="depth map (.npy/.png/.pfm) for models trained with depth")
    ap.add_argument("--depth-kind", choices=["disparity", "depth"], default="disparity")
    ap.add_argument("--view", choices=["right", "left"], default="right",
                    help="side of the holes' background: right (default) or left (mirrored)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tile", type=int, default=1024, help="tile size for large images")
    args = ap.parse_args(argv)
    try:
        model = load_model(args.checkpoint, args.device)
        jobs = pairs(Path(args.image), Path(args.mask), Path(args.output))
        for img_path, mask_path, out_path in jobs:
            rgb = load_image(img_path)
            hole = read_mask(mask_path, rgb.shape[:2])
            x = image_to_tensor(rgb, args.device)
            m = torch.from_numpy(hole)[None, None].to(args.device).float()
            d = None
            if args.depth:
                d = torch.from_numpy(load_depth(Path(args.depth), args.depth_kind, rgb.shape[:2])
                                     )[None, None].to(args.device)
            out = inpaint(model, x, m, d, view=args.view, tile=args.tile)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(tensor_to_image(out)).save(out_path)
            print(f"{img_path} + {mask_path.name} ({100 * hole.mean():.1f}% holes) -> {out_path}")
    except (CheckpointError, MediaError, ValueError) as e:
        print(f"inpaint: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fill masked regions of images with a trained checkpoint.

    python -m inpaint_online.inpaint --checkpoint runs/demo/checkpoints/best.pt \\
        --image photo.png --mask photo_mask.png --output filled.png
    python -m inpaint_online.inpaint --checkpoint CKPT --image DIR --mask MASKDIR --output OUTDIR

Masks: any image; non-zero = hole (iw3's 127 "layered" holes count as holes). In folder mode
the mask of ``NAME.ext`` is ``MASKDIR/NAME.*`` or ``MASKDIR/NAME_M.png`` (an exported
dataset: ``NAME_C.png`` pairs with ``NAME_M.png`` and is written as ``NAME_filled.png``). The
model expects the background to the right of each hole (a right view's holes); ``--view
left`` mirrors in and out. ``--fill auto`` (default) uses the model or the background
push-pull fill, whichever the checkpoint's validation scored higher (one line says which).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .checkpoint import CheckpointError
from .errors import one_line, show
from .fsutil import check_output_file, save_image, writable_dir
from .inference import (
    FILLS,
    fill_holes,
    image_to_tensor,
    load_depth_file,
    load_fill,
    tensor_to_image,
)
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
        raise MediaError(f"{show(path)}: cannot read mask ({type(e).__name__}: {one_line(e)})") from None
    if m.shape != shape:
        raise MediaError(f"{show(path)}: mask is {m.shape[1]}x{m.shape[0]} but the image is "
                         f"{shape[1]}x{shape[0]}")
    return m > 0


def pairs(image: Path, mask: Path, output: Path) -> list[tuple[Path, Path, Path]]:
    if image.is_dir():
        if not mask.is_dir():
            raise MediaError(f"{show(mask)}: --image is a folder, so --mask must be one too")
        out = []
        for p in sorted(image.iterdir()):
            if p.suffix.lower() not in IMAGE_EXTS or p.stem.endswith(("_M", "_I")):
                continue
            m = find_mask(p, mask)
            if m is None:
                print(f"inpaint: skipping {show(p)}: no mask for it in {show(mask)}", file=sys.stderr)
                continue
            out.append((p, m, output / output_name(p, m)))
        if not out:
            raise MediaError(f"{show(image)}: no image with a mask in {show(mask)}")
    else:
        out = [(image, mask, output)]
    for img, m, o in out:
        if o.resolve() in (img.resolve(), m.resolve()):
            raise MediaError(f"{show(o)}: the output would overwrite an input; choose another "
                             "--output")
    return out


def output_name(image: Path, mask: Path) -> str:
    """The output file of ``image`` in folder mode: ``NAME.png``; an exported sample's target
    ``NAME_C.png`` (mask ``NAME_M.png``) gives ``NAME_filled.png``, never a name that reads
    as a target."""
    stem = image.stem
    if stem.endswith("_C") and mask.name == stem[:-2] + "_M.png":
        return stem[:-2] + "_filled.png"
    return stem + ".png"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inpaint_online.inpaint", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="the trained model (not needed with --fill background)")
    ap.add_argument("--fill", choices=FILLS, default="auto",
                    help="what fills the holes: the model, the background push-pull fill (the "
                    "background: right of the holes, or --view left, or by --depth), or auto "
                    "(default): whichever the checkpoint's validation scored higher")
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
        # everything that can be checked is checked before the model is loaded
        jobs = pairs(Path(args.image), Path(args.mask), Path(args.output))
        if Path(args.image).is_dir():
            out = Path(args.output)
            if out.exists() and not out.is_dir():
                raise MediaError(f"{show(out)}: --image is a folder, so --output must be a "
                                 "folder too (it is a file)")
            writable_dir(out, "--output", "output")     # before the work, not per file
        else:
            check_output_file(args.output)
        model, args.fill_kind = load_fill(args.checkpoint, args.fill, args.device, "inpaint")
    except (CheckpointError, MediaError, ValueError) as e:
        print(f"inpaint: error: {e}", file=sys.stderr)
        return 2
    failed = []
    for img_path, mask_path, out_path in jobs:
        try:       # one image's failure never stops the others
            fill_one(model, img_path, mask_path, out_path, args)
        except Exception as e:  # noqa: BLE001 - the per-file backstop
            why = str(e) if isinstance(e, (MediaError, ValueError)) else f"{type(e).__name__}: {e}"
            why = one_line(why)
            if not why.startswith(show(img_path)) and not why.startswith(show(mask_path)):
                why = f"{show(img_path)}: {why}"
            print(f"inpaint: error: {why}", file=sys.stderr)
            failed.append(img_path)
    if len(jobs) == 1:
        return 2 if failed else 0
    if failed:
        print(f"inpaint: {len(failed)} of {len(jobs)} images failed: "
              + ", ".join(show(p.name) for p in failed[:10])
              + (f" and {len(failed) - 10} more" if len(failed) > 10 else ""), file=sys.stderr)
        return 1
    return 0


def fill_one(model, img_path: Path, mask_path: Path, out_path: Path, args) -> None:
    rgb = load_image(img_path)
    hole = read_mask(mask_path, rgb.shape[:2])
    if hole.all():
        print(f"inpaint: warning: {show(mask_path)}: the mask covers the whole image: nothing "
              "is known to fill from, the output is the model's guess", file=sys.stderr)
    elif not hole.any():
        print(f"inpaint: warning: {show(mask_path)}: the mask has no holes: the output is the "
              "input", file=sys.stderr)
    x = image_to_tensor(rgb, args.device)
    m = torch.from_numpy(hole)[None, None].to(args.device).float()
    d = None
    if args.depth:
        d = torch.from_numpy(load_depth_file(Path(args.depth), args.depth_kind, rgb.shape[:2])
                             )[None, None].to(args.device)
    out = fill_holes(model, args.fill_kind, x, m, d, view=args.view, tile=args.tile)
    save_image(out_path, tensor_to_image(out))
    print(f"{show(img_path)} + {show(mask_path.name)} ({100 * hole.mean():.1f}% holes) -> {show(out_path)}")


if __name__ == "__main__":
    sys.exit(main())

"""Render a stereo pair from one image: forward-warp to the left and right views with the
warp core, fill the disocclusions with a trained model, write a side-by-side image.

    python -m inpaint_online.stereo --checkpoint CKPT --image photo.jpg --depth photo_depth.png \\
        --divergence 2.5 --convergence 0.5 --output photo_LR.png
    python -m inpaint_online.stereo --checkpoint CKPT --image photo.jpg --depth-model MiDaS_small \\
        --output photo_LR.png --save-views --save-masks

``--divergence`` (% of the image width) and ``--convergence`` (0 = the farthest point on
the screen plane, 1 = the nearest) mean what they mean in iw3. Depth: a map file
(``.npy``/16-bit ``.png``/``.pfm``; ``--depth-kind depth`` if larger = farther) or a depth
model (``MiDaS_small``/``DPT_*`` with local weights, or ``fallback_lowquality``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .checkpoint import CheckpointError
from .depth import (FALLBACK, MIDAS_MODELS, DepthRequest, DepthSetupError, make_backend, read_map,
                    to_inverse_depth)
from .inference import image_to_tensor, load_model, render_stereo, tensor_to_image
from .media import MediaError, load_image


def estimate_depth(rgb: np.ndarray, path: Path, model: str, *, weights=None, hub_dir=None,
                   device="cpu") -> np.ndarray:
    """Inverse depth in [0, 1] at the image's size from a depth backend."""
    if model == FALLBACK:
        backend = make_backend(FALLBACK, device=device)
    else:
        backend = make_backend("midas", model=model, weights=weights, hub_dir=hub_dir, device=device)
    d = backend.predict(rgb[None], DepthRequest(path, path.name))[0]
    t = torch.from_numpy(np.asarray(d, dtype=np.float32))[None, None]
    return F.interpolate(t, rgb.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()


def load_depth(path: Path, kind: str, shape: tuple[int, int]) -> np.ndarray:
    d = to_inverse_depth(read_map(path), kind)
    if d.shape != shape:   # maps at model resolution are common: resize to the image
        d = F.interpolate(torch.from_numpy(d)[None, None], shape, mode="bilinear",
                          align_corners=False)[0, 0].numpy()
    lo, hi = float(d.min()), float(d.max())
    return (d - lo) / max(hi - lo, 1e-12)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m inpaint_online.stereo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--image", required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--depth", help="depth/disparity map of the image")
    src.add_argument("--depth-model", choices=[*MIDAS_MODELS, FALLBACK],
                     help="estimate depth with this model (weights must be local)")
    ap.add_argument("--depth-kind", choices=["disparity", "depth"], default="disparity",
                    help="for --depth: disparity/inverse depth (default) or depth (larger = farther)")
    ap.add_argument("--weights", help="depth model weights file")
    ap.add_argument("--hub-dir", help="local MiDaS hub clone (DPT models)")
    ap.add_argument("--divergence", type=float, default=2.0, help="%% of the width (iw3's meaning)")
    ap.add_argument("--convergence", type=float, default=0.5)
    ap.add_argument("--output", required=True, help="side-by-side image (left | right)")
    ap.add_argument("--save-views", action="store_true", help="also write OUTPUT_L.png, OUTPUT_R.png")
    ap.add_argument("--save-masks", action="store_true",
                    help="also write the hole masks OUTPUT_L_mask.png, OUTPUT_R_mask.png")
    ap.add_argument("--mode", choices=["bilinear", "nearest"], default="bilinear")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tile", type=int, default=1024)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 <= args.divergence <= 20 or not 0 <= args.convergence <= 1:
        print("stereo: error: --divergence must be in [0, 20] (%) and --convergence in [0, 1]",
              file=sys.stderr)
        return 2
    try:
        model = load_model(args.checkpoint, args.device)
        path = Path(args.image)
        rgb = load_image(path)
        if args.depth:
            d = load_depth(Path(args.depth), args.depth_kind, rgb.shape[:2])
        else:
            d = estimate_depth(rgb, path, args.depth_model, weights=args.weights,
                               hub_dir=args.hub_dir, device=args.device)
        out = render_stereo(model, image_to_tensor(rgb, args.device),
                            torch.from_numpy(d)[None, None].to(args.device).float(),
                            args.divergence, args.convergence, mode=args.mode, tile=args.tile)
    except (CheckpointError, MediaError, DepthSetupError, ValueError) as e:
        print(f"stereo: error: {e}", file=sys.stderr)
        return 2
    o = Path(args.output)
    o.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(tensor_to_image(out["sbs"])).save(o)
    written = [o]
    for view, tag in (("left", "L"), ("right", "R")):
        if args.save_views:
            written.append(o.with_name(f"{o.stem}_{tag}.png"))
            Image.fromarray(tensor_to_image(out[view])).save(written[-1])
        if args.save_masks:
            written.append(o.with_name(f"{o.stem}_{tag}_mask.png"))
            Image.fromarray(out[f"{view}_hole"][0, 0].cpu().numpy().astype(np.uint8) * 255).save(written[-1])
    holes = {v: 100 * out[f"{v}_hole"].float().mean().item() for v in ("left", "right")}
    print(f"holes filled: left {holes['left']:.2f}%, right {holes['right']:.2f}% of the frame; "
          f"wrote {', '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

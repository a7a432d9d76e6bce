"""Make training pairs from the depth cache with fresh random warp parameters and save a
labelled contact sheet: image | depth | holes (magenta) | masked input, one row per sample
(source, view — left views mirrored, as the model sees them —, parameters, hole share).

    python -m inpaint_online.preview --cache-dir runs/demo/cache --out runs/demo/preview.png

It runs the same warp core that training streams through (seeded, so the sheet is
reproducible) and prints every sample's parameters and hole fraction.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F

from .cache import DEPTH_SCALE, entry_label, load_pair, open_cache
from .config import at_least_one
from .errors import DataError, show, user_message
from .fsutil import check_output_file, save_image
from .media import MediaError
from .warp import WarpSampler, WarpSamplerConfig, masks_from_params


def make_sheet(cache_dir: str, out: str, count: int = 6, size: int = 256, seed: int = 0,
               level: int = 1) -> list[dict]:
    check_output_file(out)
    manifest = open_cache(cache_dir)
    recs = manifest.samples()
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(recs), generator=gen)[:count].tolist()
    imgs, depths, widths, names = [], [], [], []
    for i in pick:
        try:
            rgb, d = load_pair(manifest, recs[i])
        except MediaError as e:
            print(f"preview: skipping: {e}", file=sys.stderr)
            continue
        t = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float()[None] / 255
        dd = torch.from_numpy(d.astype(np.float32))[None, None] / DEPTH_SCALE
        h, w = dd.shape[-2:]
        if min(h, w) < size:   # small frames: scale up so that a crop fits
            s = size / min(h, w)
            h, w = max(size, round(h * s)), max(size, round(w * s))
            t = F.interpolate(t, (h, w), mode="bilinear", align_corners=False)
            dd = F.interpolate(dd, (h, w), mode="bilinear", align_corners=False)
        # a crop keeps the frame's geometry: shifts are measured in the full frame's width
        y0 = int(torch.randint(h - size + 1, (1,), generator=gen))
        x0 = int(torch.randint(w - size + 1, (1,), generator=gen))
        widths.append(float(w))
        names.append(entry_label(recs[i]))
        imgs.append(t[..., y0:y0 + size, x0:x0 + size])
        depths.append(dd[..., y0:y0 + size, x0:x0 + size])
    if not imgs:
        raise DataError(f"{show(cache_dir)}: none of the {len(pick)} cached maps tried could be "
                        f"read; run: python precompute_depth.py --cache-dir {show(cache_dir)} "
                        "--verify --repair")
    x, d = torch.cat(imgs), torch.cat(depths).clamp(0, 1)
    sampler = WarpSampler(WarpSamplerConfig.level(level))
    params = sampler.sample(len(x), torch.tensor(widths), gen)
    mask = masks_from_params(d, params)
    # right-view orientation, as the model sees it: left-view samples are mirrored
    flip = params.left.view(-1, 1, 1, 1)
    x, d, mask = (torch.where(flip, t.flip(-1), t) for t in (x, d, mask))
    masked = x * (~mask)
    from .pictures import depth_picture, hole_overlay, sheet, to_uint8
    rows = []
    for k, r in enumerate(params.records()):
        hole = mask[k, 0].numpy()
        view = "left view (mirrored)" if r["view"] == "left" else "right view"
        rows.append((f"{names[k]}, {view}, div {r['divergence']:.1f}% conv {r['convergence']:.2f}, "
                     f"{r['mapper']}, holes {100 * hole.mean():.1f}%",
                     [to_uint8(x[k]), depth_picture(d[k, 0]), hole_overlay(to_uint8(x[k]), hole),
                      to_uint8(masked[k])]))
    save_image(out, sheet(rows, ["image", "depth (near bright)", "holes (magenta)", "masked input"]))
    info = []
    for name, r, m in zip(names, params.records(), mask):
        r["hole_fraction"] = round(m.float().mean().item(), 4)
        info.append({"source": name, **r})
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inpaint_online.preview", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--out", required=True, help="PNG contact sheet to write")
    ap.add_argument("--count", type=at_least_one, default=6, help="samples (rows)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--level", type=int, default=1, choices=[1, 2, 3], help="iw3 divergence level")
    args = ap.parse_args(argv)
    try:
        rows = make_sheet(args.cache_dir, args.out, args.count, args.size, args.seed, args.level)
    except (DataError, FileNotFoundError, ValueError, OSError) as e:
        print(f"preview: error: {user_message(e)}", file=sys.stderr)
        return 2
    for r in rows:
        print(f"{r['source']}: divergence {r['divergence']:.2f}%  "
              f"convergence {r['convergence']:.2f}  "
              f"view {r['view']:<5}  mapper {r['mapper']:<12}  holes {100 * r['hole_fraction']:.1f}%")
    print(f"wrote {args.out} (columns: image | depth | holes | masked input; one labelled row "
          "per sample, in the model's orientation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

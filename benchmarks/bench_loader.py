"""What one DataLoader worker delivers from media of the sizes users train on: samples/s of
256² and 512² crops and 16-frame clips, read from the cache's stored RGB and from the
originals, back to back in one run (issue 24).

    python benchmarks/bench_loader.py                       # makes runs/bench_media once (~10 min)
    python benchmarks/bench_loader.py --media-dir DIR --seconds 20

The media set (made with PyAV and Pillow from bundled photos, upscaled, with film grain so
the encoders cannot cheat): 12- and 24-Mpx JPEGs; 1080p and 4K H.264 with one keyframe per
250 frames (a typical encode); 1080p HEVC (x265, same GOP). Each is cached by precompute with
the fallback depth at the default stored size (1024 px), then read by a ``CacheDataset`` in
this process (= one worker; a DataLoader with N workers scales it by about N).

Cores per GPU: how many such workers one GPU would need, for the image model of
configs/image.yaml at 256² and 512², assuming it trains at 20 % of an H100's dense bf16 peak
(989 TFLOP/s) with the FLOPs of one forward + backward counted by torch's FlopCounterMode.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inpaint_online.bundled import skimage_data_dir  # noqa: E402
from inpaint_online.cache import open_cache, precompute  # noqa: E402
from inpaint_online.cache.store import Sampling  # noqa: E402
from inpaint_online.config import load_config  # noqa: E402
from inpaint_online.depth import FallbackBackend  # noqa: E402
from inpaint_online.models import build_model  # noqa: E402
from inpaint_online.stream import CacheDataset, DataConfig  # noqa: E402

H100_BF16 = 989e12
UTILISATION = 0.20
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")


def grainy(img: np.ndarray, rng: np.random.Generator, sigma: float = 6.0) -> np.ndarray:
    return np.clip(img.astype(np.float32) + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def upscaled(name: str, w: int, h: int) -> np.ndarray:
    from PIL import Image
    im = Image.open(skimage_data_dir() / name).convert("RGB")
    s = max(w / im.width, h / im.height)
    im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.BICUBIC)
    x, y = (im.width - w) // 2, (im.height - h) // 2
    return np.asarray(im.crop((x, y, x + w, y + h)))


def make_photo(path: Path, w: int, h: int, name: str, seed: int) -> None:
    from PIL import Image
    img = grainy(upscaled(name, w, h), np.random.default_rng(seed))
    Image.fromarray(img).save(path, quality=92)


def make_video(path: Path, w: int, h: int, codec: str, frames: int, gop: int, seed: int) -> None:
    """A slow pan over an upscaled photo, fresh grain every frame, one keyframe per ``gop``."""
    import av
    rng = np.random.default_rng(seed)
    base = upscaled(PHOTOS[seed % len(PHOTOS)], w + frames * 2, h)
    with av.open(str(path), "w") as out:
        st = out.add_stream(codec, rate=Fraction(25))
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.codec_context.gop_size = gop
        opts = {"preset": "ultrafast"}
        if codec == "libx264":
            opts["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0"
        else:
            opts["x265-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0:log-level=error"
        st.options = opts
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(grainy(base[:, 2 * i:2 * i + w], rng, 4.0), format="rgb24")
            for p in st.encode(f):
                out.mux(p)
        for p in st.encode():
            out.mux(p)


MEDIA = {   # kind -> (file names, maker)
    "12-Mpx JPEG": (["p12_a.jpg", "p12_b.jpg"], lambda p, i: make_photo(p, 4000, 3000, PHOTOS[i], i)),
    "24-Mpx JPEG": (["p24_a.jpg", "p24_b.jpg"], lambda p, i: make_photo(p, 6000, 4000, PHOTOS[i + 2], i)),
    "1080p H.264 GOP 250": (["v1080.mp4"], lambda p, i: make_video(p, 1920, 1080, "libx264", 300, 250, 1)),
    "4K H.264 GOP 250": (["v4k.mp4"], lambda p, i: make_video(p, 3840, 2160, "libx264", 300, 250, 2)),
    "1080p HEVC GOP 250": (["v1080_hevc.mp4"], lambda p, i: make_video(p, 1920, 1080, "libx265", 300, 250, 3)),
}


def prepare(media_dir: Path) -> dict[str, Path]:
    """The media set (made once) and a depth cache of each kind (made once)."""
    caches = {}
    for kind, (names, make) in MEDIA.items():
        d = media_dir / kind.replace(" ", "_").replace(".", "")
        (d / "src").mkdir(parents=True, exist_ok=True)
        for i, n in enumerate(names):
            if not (d / "src" / n).exists():
                t = time.perf_counter()
                tmp = d / "src" / (".tmp." + n)
                make(tmp, i)
                tmp.rename(d / "src" / n)
                print(f"made {kind}: {n} ({time.perf_counter() - t:.0f} s)", flush=True)
        precompute([str(d / "src")], str(d / "cache"), FallbackBackend(), progress=False,
                   sampling=Sampling(max_frames=64, clip_len=16), max_size=1024)
        caches[kind] = d / "cache"
    return caches


def rate(cache: Path, crop: int, clip_len: int, rgb_from: str, seconds: float) -> float:
    """Samples (clips) per second of one worker: ``CacheDataset`` items in this process."""
    m = open_cache(cache, rgb_from="source")      # no advice line: both paths are measured
    recs = m.samples()
    if clip_len > 1 and not any(r["kind"] == "video" for r in recs):
        return float("nan")
    cfg = DataConfig(crop=crop, num_workers=0, clip_len=clip_len, rgb_from=rgb_from,
                     jitter_p=0.5)
    try:
        ds = CacheDataset(m, recs, cfg)
    except ValueError:                  # e.g. a cache without clips that long
        return float("nan")
    rng = np.random.default_rng(0)
    ds[(0, 0)]                                             # open the decoders
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        ds[(int(rng.integers(len(ds))), int(rng.integers(1 << 30)))]
        n += 1
    return n / (time.perf_counter() - t0)


def gpu_rate(crop: int) -> float:
    """Samples/s one H100 trains configs/image.yaml's model at (the assumptions above)."""
    from torch.utils.flop_counter import FlopCounterMode
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "image.yaml")
    net = build_model(cfg.model)
    x, m = torch.rand(1, 3, crop, crop), (torch.rand(1, 1, crop, crop) > 0.9).float()
    d = torch.rand(1, 1, crop, crop)
    with FlopCounterMode(display=False) as fc:
        net(x, m, d).sum().backward()
    return H100_BF16 * UTILISATION / fc.get_total_flops()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--media-dir", default="runs/bench_media")
    ap.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    ap.add_argument("--demo-cache", default="runs/demo/cache",
                    help="the README demo's cache, measured the same way for comparison")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)                      # a worker is one process on one core
    caches = prepare(Path(args.media_dir))
    if Path(args.demo_cache).is_dir():
        caches = {"demo media (README)": Path(args.demo_cache), **caches}
    g256, g512 = gpu_rate(256), gpu_rate(512)
    print(f"\nbench_loader: {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, 1 worker = 1 thread in this process, {args.seconds:g} s each")
    print(f"one H100 at {UTILISATION:.0%} of bf16 peak trains configs/image.yaml's model at "
          f"{g256:,.0f} samples/s (256²), {g512:,.0f} (512²)\n")
    head = (f"{'media':<22}{'read':>8}{'256² /s':>10}{'512² /s':>10}{'clips16 /s':>12}"
            f"{'cores/GPU 256²':>16}{'512²':>8}")
    print(head)
    print("-" * len(head))
    for kind, cache in caches.items():
        for src in ("cache", "source"):
            r256 = rate(cache, 256, 1, src, args.seconds)
            r512 = rate(cache, 512, 1, src, args.seconds)
            clips = rate(cache, 256, 16, src, args.seconds)
            print(f"{kind:<22}{src:>8}{r256:>10.1f}{r512:>10.1f}{clips:>12.2f}"
                  f"{g256 / r256:>16,.0f}{g512 / r512:>8,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

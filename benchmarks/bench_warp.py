"""Throughput of occlusion_mask: batched with per-sample parameters vs one sample at a time
vs the per-pixel reference. Prints megapixels/s (input pixels through the whole mask
pipeline: left warp + fill + right re-warp + closing).

    python benchmarks/bench_warp.py [--device cuda] [--repeat 5] [--threads N]

Depth is the real Middlebury 'motorcycle' disparity shipped with scikit-image, resized.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import real_disparity  # noqa: E402

from inpaint_online.warp import occlusion_mask  # noqa: E402
from inpaint_online.warp_reference import reference_occlusion_mask  # noqa: E402
from inpaint_online.warp_params import WarpSampler  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, device, repeat):
    fn()
    sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--mode", default="bilinear", choices=["bilinear", "nearest"])
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = [(8, 384, 384), (16, 256, 256), (4, 1024, 1024)]
    if device.type == "cuda":
        sizes += [(64, 512, 512), (256, 256, 256)]
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    print(f"# occlusion_mask ({args.mode}), device={device} ({name}), torch {torch.__version__}, "
          f"threads={torch.get_num_threads()}, cpus={os.cpu_count()}")
    disp = real_disparity()
    sampler = WarpSampler()
    print(f"{'B x H x W':>16} {'batched Mpx/s':>14} {'1-by-1 Mpx/s':>13} {'ratio':>6} "
          f"{'samples/s':>10}")
    for b, h, w in sizes:
        d = F.interpolate(disp, (h, w), mode="bilinear", align_corners=False).repeat(b, 1, 1, 1)
        d = d.to(device)
        p = sampler.sample(b, w, torch.Generator().manual_seed(0)).to(device)
        kw = dict(closing=(5, 5), mode=args.mode, max_shift=p.max_shift, check=False)

        def batched():
            occlusion_mask(d, p.divergence, p.convergence, p.left, width=p.width, **kw)

        def one_by_one():
            for i in range(b):
                occlusion_mask(d[i:i + 1], p.divergence[i:i + 1], p.convergence[i:i + 1],
                               p.left[i:i + 1], width=p.width[i:i + 1], **kw)

        mpx = b * h * w / 1e6
        tb = timeit(batched, device, args.repeat)
        t1 = timeit(one_by_one, device, max(1, args.repeat // 2))
        print(f"{f'{b}x{h}x{w}':>16} {mpx / tb:14.1f} {mpx / t1:13.1f} {t1 / tb:6.2f} "
              f"{b / tb:10.1f}")

    # the per-pixel reference is pure Python: small sizes only, on the CPU
    b, h, w = 2, 48, 96
    d = F.interpolate(disp, (h, w), mode="bilinear", align_corners=False).repeat(b, 1, 1, 1)
    p = sampler.sample(b, w, torch.Generator().manual_seed(0))
    kw = dict(closing=(5, 5), mode=args.mode, max_shift=p.max_shift)
    t_ref = timeit(lambda: reference_occlusion_mask(d, p.divergence, p.convergence, p.left,
                                                    width=p.width, **kw), torch.device("cpu"), 1)
    t_bat = timeit(lambda: occlusion_mask(d, p.divergence, p.convergence, p.left,
                                          width=p.width, **kw), torch.device("cpu"), args.repeat)
    mpx = b * h * w / 1e6
    print(f"reference (per-pixel Python, CPU) {b}x{h}x{w}: {mpx / t_ref:.3f} Mpx/s; "
          f"batched on the same input {mpx / t_bat:.1f} Mpx/s; ratio {t_ref / t_bat:.0f}x")


if __name__ == "__main__":
    main()

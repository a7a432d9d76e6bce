"""Throughput and cost model of occlusion_mask, per method.

Prints, for each method (``geometric``, ``iw3``):

* megapixels/s batched with per-sample parameters vs one sample at a time, on this device;
* kernel launches per batch and bytes read + written per pixel, counted op by op with a
  ``TorchDispatchMode`` over one eager call (views excluded: they launch nothing);
* from those two, a predicted H100 rate at 64 x 512^2 (3.35 TB/s HBM3, ~5 us per launch):
  ``time = launches * 5 us + bytes / 3.35 TB/s`` — eager PyTorch, no fusion (an upper bound
  on cost; torch.compile fuses the elementwise chains);
* the per-pixel Python reference on a small input, for scale.

    python benchmarks/bench_warp.py [--device cuda] [--repeat 5] [--threads N] [--method M]

Depth: the fallback backend's depth of scikit-image's 'coffee' photo, resized; parameters
from ``WarpSampler()`` (iw3 level 1) with their host-side shift bound (as WarpCollate uses it).
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
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inpaint_online.bundled import photo_depth  # noqa: E402
from inpaint_online.warp import (  # noqa: E402
    MASK_METHODS,
    WarpSampler,  # noqa: E402
    occlusion_mask,
)
from inpaint_online.warp.reference import reference_geometric_mask, reference_iw3_mask

H100_BYTES_PER_S = 3.35e12
LAUNCH_S = 5e-6


class OpCounter(TorchDispatchMode):
    """Counts kernel-launching aten ops and the bytes their tensors read and write."""

    def __init__(self):
        super().__init__()
        self.launches = 0
        self.bytes = 0

    @staticmethod
    def _nbytes(t: torch.Tensor) -> int:
        # an expanded (stride 0) input is read once per stored element, not per view element
        stored = t.untyped_storage().nbytes() // max(t.element_size(), 1)
        return min(t.numel(), stored) * t.element_size()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        schema = func._schema
        is_view = (not schema.is_mutable and schema.returns
                   and schema.returns[0].alias_info is not None)
        if not is_view:
            self.launches += 1
            ins = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
            outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
            self.bytes += sum(map(self._nbytes, ins)) + sum(o.numel() * o.element_size() for o in outs)
        return out


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
    ap.add_argument("--method", choices=MASK_METHODS, action="append",
                    help="method(s) to measure (default: all)")
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
    print(f"# occlusion_mask, device={device} ({name}), torch {torch.__version__}, "
          f"threads={torch.get_num_threads()}, cpus={os.cpu_count()}")
    depth = photo_depth("coffee.png")
    sampler = WarpSampler()
    for method in args.method or MASK_METHODS:
        print(f"\n## method={method}")
        print(f"{'B x H x W':>16} {'batched Mpx/s':>14} {'1-by-1 Mpx/s':>13} {'ratio':>6} "
              f"{'samples/s':>10}")
        for b, h, w in sizes:
            d = F.interpolate(depth, (h, w), mode="bilinear", align_corners=False).repeat(b, 1, 1, 1)
            d = d.to(device)
            p = sampler.sample(b, w, torch.Generator().manual_seed(0))
            bound = p.shift_bound
            p = p.to(device)
            kw = dict(closing=(5, 5), method=method, max_shift=bound, check=False)

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

        # cost model: counted at 64 x 512^2 with level-1 parameters for a 512-px frame
        b, h, w = 64, 512, 512
        d = F.interpolate(depth, (h, w), mode="bilinear", align_corners=False).repeat(b, 1, 1, 1)
        p = sampler.sample(b, w, torch.Generator().manual_seed(0))
        counter = OpCounter()
        with counter:
            occlusion_mask(d, p.divergence, p.convergence, p.left, width=p.width, closing=(5, 5),
                           method=method, max_shift=p.shift_bound, check=False)
        px = b * h * w
        t_pred = counter.launches * LAUNCH_S + counter.bytes / H100_BYTES_PER_S
        print(f"cost at {b}x{h}x{w} (shift bound {p.shift_bound:.1f} px): "
              f"{counter.launches} kernel launches/batch, {counter.bytes / px:.0f} bytes/px "
              f"read+written -> predicted H100 {b / t_pred:,.0f} samples/s "
              f"({counter.launches * LAUNCH_S * 1e3:.2f} ms launches + "
              f"{counter.bytes / H100_BYTES_PER_S * 1e3:.2f} ms memory per batch, eager)")

        # the per-pixel reference is pure Python: small sizes only, on the CPU
        b, h, w = 2, 24, 96
        d = F.interpolate(depth, (h, w), mode="bilinear", align_corners=False).repeat(b, 1, 1, 1)
        p = sampler.sample(b, w, torch.Generator().manual_seed(0))
        if method == "geometric":
            def ref():
                return reference_geometric_mask(d, p.divergence, p.convergence, p.left, width=p.width)
        else:
            def ref():
                return reference_iw3_mask(d, p.divergence, p.convergence, p.left, width=p.width)
        t_ref = timeit(ref, torch.device("cpu"), 1)
        t_bat = timeit(lambda: occlusion_mask(d, p.divergence, p.convergence, p.left, width=p.width,
                                              closing=None, method=method), torch.device("cpu"),
                       args.repeat)
        mpx = b * h * w / 1e6
        print(f"reference (per-pixel Python, CPU) {b}x{h}x{w}: {mpx / t_ref:.4f} Mpx/s; "
              f"batched on the same input {mpx / t_bat:.1f} Mpx/s; ratio {t_ref / t_bat:.0f}x")


if __name__ == "__main__":
    main()

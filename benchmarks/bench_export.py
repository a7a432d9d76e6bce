"""Export drop rate and throughput: how many drawn samples have too few holes, and samples/s.

For a config and its depth cache, exports ``--count`` training samples at ``--size`` for each
warp level and each crop window given, into temp folders, and prints per row: the share of
drawn samples dropped (fewer than ``collate.min_hole_px`` hole pixels per frame), samples/s
written (PNG files included), and the ratio to the first window of the same level (measured
in the same run: this machine is noisy).

    python benchmarks/bench_export.py --config configs/demo.yaml --size 256 \\
        --levels 1 2 3 --windows 1.0 1.5 --count 96

A row's "dropped" counts every drawn sample that was warped and not kept (a left-out
source's probe draws included); "left out" the sources ``--min-yields`` left out (their later
draws are skipped before the warp and are not counted as drawn).

``--windows 1.0`` is the stream without crop choice (a crop drawn blind, as before
``data.crop_window`` existed); retries are the config's (``collate.retries``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inpaint_online.config import load_config  # noqa: E402
from inpaint_online.export import export_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--windows", type=float, nargs="+", default=[1.0, 1.5])
    ap.add_argument("--count", type=int, default=96)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--min-yields", type=float, nargs="+", default=[0.25],
                    help="--export-min-yield values to compare (0: keep every source)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch threads {__import__('torch').get_num_threads()}; "
          f"{args.config} {' '.join(args.overrides)}; size {args.size}, {args.count} train samples")
    print(f"{'level':>5} {'window':>6} {'yield':>5} {'retries':>7} {'dropped':>8} {'left out':>8} "
          f"{'samples/s':>9} {'vs first':>8}")
    for level in args.levels:
        first = None
        for win, my in [(w, y) for w in args.windows for y in args.min_yields]:
            cfg = load_config(args.config, [*args.overrides, f"warp.level={level}",
                                            f"data.crop_window={win}", "data.val_fraction=0"])
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                s = export_dataset(cfg, out, args.count, 0, size=args.size, force=True,
                                   threads=args.threads, progress=False, min_yield=my)
                dt = time.perf_counter() - t0
            drawn = s.written["train"] + s.dropped["train"]
            rate = s.written["train"] / dt
            first = first or rate
            clip = f", clips of {s.plan.clip_len}" if s.plan.clip_len > 1 else ""
            print(f"{level:>5} {win:>6.2f} {my:>5.2f} {cfg.collate.retries:>7} "
                  f"{100 * s.dropped['train'] / max(drawn, 1):>7.1f}% {len(s.left_out['train']):>8} "
                  f"{rate:>9.1f} "
                  f"{rate / first:>8.2f}{clip}")


if __name__ == "__main__":
    main()

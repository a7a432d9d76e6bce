"""Where training time goes: loader alone, WarpCollate alone, training step alone, full loop.

    python benchmarks/bench_train.py --config configs/image.yaml data.cache_dir=runs/demo/cache
    python benchmarks/bench_train.py --config configs/image.yaml data.batch_size=8 data.num_workers=2

Prints samples/s of each stage and the fraction of the full loop's time spent waiting on
data (loader + collate on the CPU; loader + launches on CUDA, where the collate overlaps the
step on a side stream). The warp/collate stage must not be the bottleneck: its samples/s
should be well above the step's.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inpaint_online.cache import open_cache
from inpaint_online.config import load_config  # noqa: E402
from inpaint_online.devices import resolve_device
from inpaint_online.stream import (  # noqa: E402
    CacheDataset,
    Prefetcher,
    StreamSampler,
    WarpCollate,
    make_loader,
    split_records,
)
from inpaint_online.train import Trainer


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, n, device, warmup=2):
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/image.yaml")
    ap.add_argument("--batches", type=int, default=10, help="timed batches per measurement")
    ap.add_argument("--data-only", action="store_true",
                    help="only the loader and WarpCollate (e.g. a big model on a CPU)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args(argv)
    cfg = load_config(args.config, args.overrides)
    device = resolve_device(cfg.run.device, 0)
    bs, n = cfg.data.batch_size, args.batches
    manifest = open_cache(cfg.data.cache_dir)
    recs, _ = split_records(manifest.samples(), cfg.data.val_fraction)
    ds = CacheDataset(manifest, recs, cfg.data)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# bench_train: device={device} ({dev_name}), torch {torch.__version__}, "
          f"threads={torch.get_num_threads()}, cpus={os.cpu_count()}")
    print(f"# config {args.config} {' '.join(args.overrides)}: crop {cfg.data.crop}, batch {bs}, "
          f"workers {cfg.data.num_workers}, model {cfg.model.kind} c={cfg.model.channels} "
          f"levels={cfg.model.levels} blocks={cfg.model.blocks}, clip_len {cfg.data.clip_len}, amp {cfg.train.amp}, "
          f"cache {len(manifest.entries)} entries")

    def loader(start=0):
        return make_loader(ds, StreamSampler(len(ds), seed=0, start=start),
                           pin_memory=device.type == "cuda")

    it = iter(loader())
    t_load = timed(lambda: next(it), n, torch.device("cpu"), warmup=max(2, cfg.data.num_workers))
    cpu_batch = next(it)

    collate = WarpCollate(cfg.warp, cfg.collate, device=device, seed=0)
    steps = iter(range(10 ** 9))
    t_collate = timed(lambda: collate(cpu_batch, next(steps)), n, device)

    unit = "clips" if cfg.data.clip_len > 1 else "samples"
    if args.data_only:
        print(f"{'stage':<28}{'ms/batch':>10}{unit + '/s':>12}{'frames/s':>10}")
        for name, t in [("loader (workers, CPU)", t_load), ("WarpCollate (" + device.type + ")", t_collate)]:
            print(f"{name:<28}{1000 * t:>10.1f}{bs / t:>12.1f}{bs * cfg.data.clip_len / t:>10.1f}")
        return 0
    trainer = Trainer(cfg, device)
    batch = collate(cpu_batch, 0)
    t_step = timed(lambda: trainer.step(batch), n, device)

    pre = iter(Prefetcher(loader(start=10 * bs), collate, start_step=10))
    waits = []

    def full():
        b, w = next(pre)
        waits.append(w)
        trainer.step(b)
    for _ in range(2):
        full()
    waits.clear()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        full()
    sync(device)
    t_full = (time.perf_counter() - t0) / n
    wait_frac = sum(waits) / (t_full * n)

    params = sum(p.numel() for p in trainer.model.parameters())
    print(f"{'stage':<28}{'ms/batch':>10}{unit + '/s':>12}{'frames/s':>10}")
    for name, t in [("loader (workers, CPU)", t_load), ("WarpCollate (" + device.type + ")", t_collate),
                    (f"train step ({params / 1e6:.2f}M params)", t_step), ("full loop", t_full)]:
        print(f"{name:<28}{1000 * t:>10.1f}{bs / t:>12.1f}{bs * cfg.data.clip_len / t:>10.1f}")
    print(f"data-wait fraction of the full loop: {100 * wait_frac:.1f}%  "
          f"(collate / step time: {t_collate / t_step:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

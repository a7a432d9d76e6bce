"""Fill the depth cache from raw media (the work behind ``precompute_depth.py``).

Resumable (skips what is cached, unchanged and intact; recomputes what changed or whose
file is missing or of the wrong size), shardable (``shard=(i, n)``), and it never stops on
a bad file: every file has its own error boundary, and the file and the reason go into the
summary and the manifest's error records. The per-batch work runs in :mod:`.pipeline`;
:mod:`.verify` checks and repairs a cache.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..depth import DepthBackend, DepthRequest, clip_span, resize_normalised
from ..errors import one_line, show
from ..fsutil import atomic_write_bytes, sweep_temp, writable_dir
from ..media import (
    MediaError,
    VideoReader,
    find_media,
    fit_frames,
    load_image,
    media_kind,
    sample_frames,
)
from . import pipeline
from .pipeline import Chunk, Progress, RgbOnly
from .store import (
    RGB_FORMATS,
    Manifest,
    ManifestWriter,
    Sampling,
    Summary,
    depth_size,
    encode_depth,
    encode_rgb,
    entry_key,
    error_key,
    file_check,
    fingerprint,
    mismatch,
    shard_of,
)

log = logging.getLogger("inpaint_online.cache")


VIDEO_NORMS = ("clip", "frame")


@dataclass
class Task:
    """One source to compute: its path (resolved), its path under the input root, and for a
    repair exactly which ``(frame, clip start)`` to recompute with the ranges they had."""
    path: Path
    rel: str
    only: list[tuple[int, int | None]] | None = None
    spans: dict[int, tuple[float, float]] | None = None


class FillJob:
    """What a run knows and writes: the cache, its manifest, the backend's signature and the
    storage settings. The workers only read it (:meth:`plan`); the writer thread of
    :mod:`.pipeline` writes through it (:meth:`store`, :meth:`error`)."""

    def __init__(self, root: Path, backend: DepthBackend, writer: ManifestWriter,
                 manifest: Manifest, max_size: int | None, fmt: str, with_hash: bool,
                 summary: Summary, min_side: int = 0, force: set[str] = frozenset(),
                 video_norm: str = "clip", rgb_fmt: str | None = "jpeg"):
        self.root, self.backend, self.writer, self.manifest = root, backend, writer, manifest
        self.max_size, self.fmt, self.with_hash, self.summary = max_size, fmt, with_hash, summary
        self.min_side, self.force = min_side, force
        if rgb_fmt is not None and rgb_fmt not in RGB_FORMATS:
            raise ValueError(f"rgb_fmt must be one of {tuple(RGB_FORMATS)} or None, got {rgb_fmt!r}")
        self.rgb_fmt = rgb_fmt
        if video_norm not in VIDEO_NORMS:
            raise ValueError(f"video_norm must be one of {VIDEO_NORMS}, got {video_norm!r}")
        self.video_norm = video_norm
        self.signature = {"backend": backend.name, "backend_settings": backend.settings()}

    def is_current(self, key: str, fp: dict, size: tuple[int, int], fresh: list) -> bool:
        """Whether ``key`` is cached, unchanged and intact. Read-only (it runs in workers):
        a file touched since it was written but intact adds its refreshed record to
        ``fresh``, for the writer to append."""
        rec = self.manifest.entries.get(key)
        if (rec is None or key in self.force or rec["fingerprint"] != fp
                or rec["backend"] != self.signature["backend"]
                or rec["backend_settings"] != self.signature["backend_settings"]
                or tuple(rec["depth_size"]) != size
                or not rec["depth_file"].endswith("." + self.fmt)
                or (rec["kind"] == "video"
                    and rec.get("depth_norm", {"mode": "frame"})["mode"] != self.video_norm)):
            return False
        mtime = self._intact(rec, "depth")
        if mtime is None:
            return False
        if mtime != rec.get("depth_mtime_ns", mtime):
            fresh.append(dict(rec, depth_mtime_ns=mtime))   # intact: the new mtime
        return True

    def rgb_current(self, key: str, fresh: list) -> bool:
        """Whether the RGB of a current ``key`` is stored in this run's format and intact
        (always, when this run stores none)."""
        if self.rgb_fmt is None:
            return True
        rec = next((r for r in reversed(fresh) if r["key"] == key), self.manifest.entries[key])
        if not rec.get("rgb_file", "").endswith("." + RGB_FORMATS[self.rgb_fmt]):
            return False
        mtime = self._intact(rec, "rgb")
        if mtime is None:
            return False
        if mtime != rec.get("rgb_mtime_ns", mtime):
            fresh[:] = [r for r in fresh if r["key"] != key] + [dict(rec, rgb_mtime_ns=mtime)]
        return True

    def _intact(self, rec: dict, kind: str) -> int | None:
        """The mtime of a record's ``kind`` file when it is there with the size it was written
        with and, if it was touched since, still its CRC; None otherwise. A stat in the usual
        case: the bytes are read only when the mtime changed (overwritten? copied?)."""
        path = self.root / rec[f"{kind}_file"]
        try:
            st = path.stat()
            if mismatch(rec, size=st.st_size, kind=kind) is not None:
                return None
            if rec.get(f"{kind}_mtime_ns", st.st_mtime_ns) != st.st_mtime_ns \
                    and mismatch(rec, data=path.read_bytes(), kind=kind) is not None:
                return None
        except OSError:
            return None
        return st.st_mtime_ns

    def check_size(self, w: int, h: int) -> None:
        if min(w, h) < self.min_side:
            raise MediaError(f"{w}x{h} px is smaller than --min-side {self.min_side} px "
                             "(too small to crop training samples from)")

    def plan(self, task: Task, sampling: Sampling, batch_size: int, st: dict):
        """The work of one source, for a worker: yields chunks (:class:`~.pipeline.Chunk`) of
        at most ``batch_size`` decoded and prepared frames with their stored RGB, and
        :class:`~.pipeline.RgbOnly` items for frames whose depth is current but whose RGB is
        missing; fills ``st`` (``kind``, ``fp``, ``size``, ``src_wh``, ``skipped``,
        ``fresh``).

        Video, ``video_norm="clip"``: a group is a clip (one run of consecutive sampled
        frames); its frames will share one range, robust percentiles of all their raw maps
        (:func:`clip_span`), so the same surface keeps its depth from frame to frame; a clip
        with any frame to (re)compute is recomputed whole. ``"frame"``: min-max per frame
        (iw3's way; the maps flicker when what is nearest or farthest changes). A repair
        (``task.only``) recomputes exactly the frames it names, with the ranges they had."""
        path, rel = task.path, task.rel
        st["kind"] = kind = media_kind(path)
        st["fp"] = fp = fingerprint(path, self.with_hash)
        prepare = self.backend.prepare
        if kind == "image":
            key = entry_key(path, None)
            rec = self.manifest.entries.get(key)
            depth_ok = rec is not None and self.is_current(key, fp, tuple(rec["depth_size"]),
                                                           st["fresh"])
            if depth_ok and self.rgb_current(key, st["fresh"]):
                st["skipped"] += 1
                return
            img = load_image(path)
            hh, ww = img.shape[:2]
            self.check_size(ww, hh)
            st["src_wh"], st["size"] = (ww, hh), depth_size(ww, hh, self.max_size)
            if depth_ok:                       # only the RGB is missing: the depth stays
                st["skipped"] += 1
                yield RgbOnly([key], self.stored_rgb(img[None], st["size"]))
                return
            req = DepthRequest(path, rel, size=st["size"])
            yield Chunk([(None, None)], 0, 1, req, prepare(img[None], req),
                        self.stored_rgb(img[None], st["size"]))
            return
        reader = VideoReader(path)
        info = reader.info
        self.check_size(info.width, info.height)
        st["src_wh"] = (info.width, info.height)
        st["size"] = size = depth_size(info.width, info.height, self.max_size)
        if task.only is not None:
            groups = [list(task.only)]
        else:
            clips = sample_frames(info.num_frames, info.fps, every=sampling.every,
                                  target_fps=sampling.fps, max_frames=sampling.max_frames,
                                  clip_len=sampling.clip_len, clip_stride=sampling.clip_stride)
            groups, rgb_only = [], []
            for clip in clips:
                stale = [f for f in clip
                         if not self.is_current(entry_key(path, f), fp, size, st["fresh"])]
                if self.video_norm == "clip" and stale:
                    stale = list(clip)                   # one range for the whole clip
                st["skipped"] += len(clip) - len(stale)
                if stale:
                    groups.append([(f, clip[0]) for f in stale])
                rgb_only += [f for f in clip if f not in stale
                             and not self.rgb_current(entry_key(path, f), st["fresh"])]
            # frames whose depth is current but whose RGB is missing: decoded in order
            for i in range(0, len(rgb_only), batch_size):
                frames = rgb_only[i:i + batch_size]
                yield RgbOnly([entry_key(path, f) for f in frames],
                              self.stored_rgb(reader.get_batch(frames), size))
        for g, todo in enumerate(groups):
            for i in range(0, len(todo), batch_size):
                chunk = todo[i:i + batch_size]
                req = DepthRequest(path, rel, [f for f, _ in chunk], size=size)
                rgb = reader.get_batch(req.frames)
                yield Chunk(chunk, g, len(todo), req, prepare(rgb, req),
                            self.stored_rgb(rgb, size))

    def stored_rgb(self, frames: np.ndarray, size: tuple[int, int]) -> list[bytes] | None:
        """The frames ``uint8 (N, H, W, 3)`` as the cache stores them: at the depth's ``size``
        (bicubic, as the loader resized originals before the cache held RGB), encoded in
        ``rgb_fmt``. Runs in the decoding workers."""
        if self.rgb_fmt is None:
            return None
        return [encode_rgb(f, self.rgb_fmt) for f in fit_frames(frames, size)]

    def _write(self, key: str, kind: str, suffix: str, data: bytes) -> dict:
        """Write a record's ``kind`` file atomically; the fields its record keeps of it."""
        h = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()
        rel_file = f"{kind}/{h[:2]}/{h}.{suffix}"
        atomic_write_bytes(self.root / rel_file, data)
        old = self.manifest.entries.get(key, {}).get(f"{kind}_file")
        if old and old != rel_file:             # another format before: do not leave it behind
            (self.root / old).unlink(missing_ok=True)
        return {f"{kind}_file": rel_file, **file_check(data, kind),
                f"{kind}_mtime_ns": (self.root / rel_file).stat().st_mtime_ns}

    def store(self, source: Path, rel: str, kind: str, frame: int | None, clip: int | None,
              src_wh: tuple[int, int], size: tuple[int, int], depth: np.ndarray, fp: dict,
              norm: dict | None = None, rgb: bytes | None = None) -> None:
        """Write a frame's RGB and depth files, then its record (a kill in between loses
        nothing: the record is what makes a frame cached)."""
        key = entry_key(source, frame)
        if not np.isfinite(depth).all():
            raise MediaError(f"the depth backend returned non-finite values"
                             f"{'' if frame is None else f' for frame {frame}'}")
        rgb_fields = {} if rgb is None else self._write(key, "rgb", RGB_FORMATS[self.rgb_fmt], rgb)
        depth_fields = self._write(key, "depth", self.fmt, encode_depth(depth, self.fmt))
        rec = {"key": key, "source": str(source), "rel": rel, "kind": kind, "frame": frame,
               "clip": clip, "src_size": list(src_wh), "depth_size": list(size),
               **depth_fields, **rgb_fields,
               "fingerprint": fp, **self.signature, **({"depth_norm": norm} if norm else {})}
        self._clear_error(rec["source"])
        self.writer.append(rec)
        self.summary.computed += 1
        self.summary.add_bytes(rec)

    def add_rgb(self, key: str, rgb: bytes) -> None:
        """Store the RGB of a frame whose depth is cached and current (a cache made before
        the cache held RGB); the depth is not touched."""
        rec = dict(self.manifest.entries[key], **self._write(key, "rgb",
                                                              RGB_FORMATS[self.rgb_fmt], rgb))
        self.refresh(rec)
        self.summary.rgb_added += 1
        self.summary.add_bytes(rec)

    def _clear_error(self, source: str) -> None:
        """A video's earlier failure is over once one of its frames is stored again."""
        err = error_key(Path(source))
        if err in self.manifest.errors:
            self.writer.append({"key": err, "source": source, "deleted": True})
            del self.manifest.errors[err]

    def refresh(self, rec: dict) -> None:
        self._clear_error(rec["source"])
        cur = self.manifest.entries.get(rec["key"], {})
        if "rgb_file" in cur and "rgb_file" not in rec:    # an RGB added earlier in this run
            rec = {**rec, **{k: v for k, v in cur.items() if k.startswith("rgb_")}}
        self.writer.append(rec)
        self.manifest.entries[rec["key"]] = rec

    def error(self, source: Path, why: str, kind: str | None = None) -> None:
        """Record a source's failure. A video's goes under its own key: under frame 0's it
        replaced that frame's entry (lost, recomputed and dropped again by every re-run)."""
        self.summary.errors.append((str(source), why))
        key = error_key(source) if kind == "video" else entry_key(source, None)
        self.writer.append({"key": key, "source": str(source), "error": why})

    def finish(self, task: Task, st: dict, raws: list, frames: list,
               rgbs: list | None = None) -> None:
        """Normalise a group's raw maps and store them with their RGB (the writer thread)."""
        raw = np.concatenate(raws)
        rgbs = rgbs if rgbs and all(r is not None for r in rgbs) else [None] * len(frames)
        size, kind = st["size"], st["kind"]
        common = (task.path, task.rel, kind)
        if kind == "image":
            self.store(*common, None, None, st["src_wh"], size, resize_normalised(raw, *size)[0],
                       st["fp"], rgb=rgbs[0])
        elif task.spans is not None:           # a repair: the ranges the clip was made with
            for (f, c), r, rgb in zip(frames, raw, rgbs):
                span = task.spans.get(f)
                norm = {"mode": "clip", "lo": span[0], "hi": span[1]} if span else {"mode": "frame"}
                self.store(*common, f, c, st["src_wh"], size,
                           resize_normalised(r[None], *size, span)[0], st["fp"], norm, rgb)
        elif self.video_norm == "frame":
            for (f, c), d, rgb in zip(frames, resize_normalised(raw, *size), rgbs):
                self.store(*common, f, c, st["src_wh"], size, d, st["fp"], {"mode": "frame"},
                           rgb)
        else:
            lo, hi = clip_span(raw)
            for (f, c), d, rgb in zip(frames, resize_normalised(raw, *size, (lo, hi)), rgbs):
                self.store(*common, f, c, st["src_wh"], size, d, st["fp"],
                           {"mode": "clip", "lo": lo, "hi": hi}, rgb)


def _rel(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def _link_reason(e: BaseException) -> str:
    if isinstance(e, RuntimeError) or getattr(e, "errno", None) == errno.ELOOP:
        return "symbolic link loop (the link points back to itself)"
    if isinstance(e, FileNotFoundError):
        return "broken symbolic link (its target does not exist)"
    return one_line(f"cannot resolve the path ({type(e).__name__}: {e})")


def prepare_cache_dir(cache_dir: str | Path) -> Path:
    """The cache folder, created if needed and checked before any work; stale temp files of
    an interrupted run (a dead writer's, or older than an hour) are removed."""
    root = writable_dir(cache_dir, "--cache-dir", "cache")
    (root / "depth").mkdir(exist_ok=True)
    swept = sweep_temp(root) + sweep_temp(root / "depth", recursive=True)
    if (root / "rgb").is_dir():
        swept += sweep_temp(root / "rgb", recursive=True)
    if swept:
        log.info("%s: removed %d temp file(s) left by an interrupted run", show(root), swept)
    return root


def precompute(inputs: list[str], cache_dir: str, backend: DepthBackend, *,
               sampling: Sampling | None = None, shard: tuple[int, int] | None = None,
               max_size: int | None = 1024, fmt: str = "npy", with_hash: bool = False,
               prune: bool = False, batch_size: int = 8, progress: bool = True,
               min_side: int = 16, video_norm: str = "clip", workers: int = 0,
               progress_every: float | None = None, rgb_fmt: str | None = "jpeg") -> Summary:
    """Compute and cache depth for every image and sampled video frame under ``inputs``:
    ``workers`` DataLoader processes decode and resize, the backend runs on batches of
    ``batch_size`` frames across files (:mod:`.pipeline`). ``rgb_fmt``: the format of the
    RGB stored beside each map at its size (``None``: none; the loader then decodes the
    originals); a cache without it gets it on a re-run, without recomputing depth."""
    t0 = time.perf_counter()
    sampling = sampling or Sampling()
    if shard is not None and not (0 <= shard[0] < shard[1]):
        raise ValueError(f"shard must be i/n with 0 <= i < n, got {shard[0]}/{shard[1]}")
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size}, {workers}")
    if prune:
        absent = [i for i in inputs if not Path(i).exists()]
        if absent:
            raise ValueError(f"{show(absent[0])}: the input is missing (a drive not mounted?); "
                             "--prune would remove every entry cached from it: nothing was done. "
                             "Make it available, or run without --prune")
    root = prepare_cache_dir(cache_dir)
    summary = Summary()
    found, skipped = find_media(inputs)
    manifest = Manifest(root)
    writer = ManifestWriter(root, shard)
    try:
        job = FillJob(root, backend, writer, manifest, max_size, fmt, with_hash, summary, min_side,
                      video_norm=video_norm, rgb_fmt=rgb_fmt)
        for path, why in skipped:
            job.error(path, why)
        tasks, seen = [], set()
        for r, p in found:
            try:
                rp = p.resolve(strict=True)
            except (OSError, RuntimeError) as e:
                job.error(p, _link_reason(e))
                continue
            if rp not in seen:                 # reached twice (a linked folder): done once
                seen.add(rp)
                tasks.append(Task(rp, _rel(r, p)))
        if shard is not None:
            tasks = [t for t in tasks if shard_of(t.path, shard[1]) == shard[0]]
        label = "depth" if shard is None else f"depth {shard[0]}/{shard[1]}"
        bar = Progress(len(tasks), label=label, enabled=progress, every=progress_every)
        summary.stats = pipeline.run(job, tasks, sampling, batch_size, workers, bar)

        # sources this run is responsible for that no longer exist: in its shard, and (for
        # --prune) under one of its inputs — another input's entries are not its to judge
        roots = [Path(i).resolve() for i in inputs]

        def mine(p: str) -> bool:
            if shard is not None and shard_of(Path(p), shard[1]) != shard[0]:
                return False
            return not prune or any(Path(p) == r or r in Path(p).parents for r in roots)

        gone = sorted({r["source"] for r in manifest.entries.values()
                       if mine(r["source"]) and not Path(r["source"]).exists()})
        summary.vanished = gone
        if prune and gone:
            for key, rec in list(manifest.entries.items()):
                if rec["source"] in gone:
                    manifest.remove_files(rec)
                    writer.append({"key": key, "source": rec["source"], "deleted": True})
                    summary.pruned += 1
            summary.vanished = []
        summary.measure(compact_manifest(root, writer))
    finally:
        writer.finish()    # also when the run fails: the next one may write
    summary.seconds = time.perf_counter() - t0
    return summary


def compact_manifest(root: Path, writer: ManifestWriter) -> Manifest:
    """Rewrite this run's manifest file with the newest record of each key it holds; the
    whole cache's merged manifest (compaction leaves it as it is)."""
    merged = Manifest(root)
    keep = {k: r for k, r in {**merged.entries, **merged.errors}.items()
            if merged.origin.get(k) == writer.path.name}
    writer.compact(keep)
    writer.finish()
    return merged

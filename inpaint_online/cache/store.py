"""The depth cache's storage: one ``uint16`` depth map per image / sampled video frame, its RGB
at the map's size, and a manifest.

Layout of ``DIR``::

    manifest.jsonl                  records of an unsharded run (JSON lines)
    manifest.shard-I-of-N.jsonl     records of shard I (shards never share a source)
    depth/ab/<sha1>.npy             uint16 normalised inverse depth (65535 = nearest),
                                    memory-mappable (the training read path; PNG decode
                                    would cost ~20 ms per 720p frame, docs/design.md)
    depth/ab/<sha1>.png             the same as a viewable 16-bit PNG (``--format png``)
    rgb/ab/<sha1>.jpg               the frame's RGB at the map's size (``--rgb-format``:
                                    jpg, webp, png or npy; absent in older caches)

A record is ``{"key", "source", "rel", "kind", "frame", "clip", "src_size", "depth_file",
"depth_size", "depth_bytes", "depth_crc32", "depth_mtime_ns", "rgb_file", "rgb_bytes",
"rgb_crc32", "rgb_mtime_ns", "backend", "backend_settings", "fingerprint", "time"}`` or an error record
``{"key", "source", "error", "time"}``. Records are appended (and fsync'ed) as work
completes; the newest record of a key wins; a torn last line is ignored; at the end of a run
the manifest is compacted atomically. Depth files are written to a temp file and
``os.replace``-d, so a run killed at any point loses nothing and a re-run finishes the job;
the temp files a kill leaves behind are swept when the cache is next opened for writing.

Integrity: ``depth_bytes`` and ``depth_crc32`` (of the file's bytes; ``rgb_*`` the same for
the RGB) are checked by every read of the training path (:func:`load_cached_depth`,
:func:`load_cached_rgb`). A re-run of ``precompute_depth.py`` stats
every cached file: one that is missing or of the wrong size is recomputed; one whose mtime
differs from ``depth_mtime_ns`` (written to since) is read and recomputed unless its CRC
still matches. ``--verify`` reads every file (damage that kept size and mtime: bit rot) and
``--repair`` recomputes what fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import one_line, show
from ..fsutil import LockHeld, ProcessLock, atomic_write_bytes

MANIFEST_GLOB = "manifest*.jsonl"

# The cache stores inverse depth in [0, 1] as uint16: 0 = farthest, DEPTH_SCALE = nearest.
# The one home of this scale: readers divide by it, the collate and composites use it.
DEPTH_SCALE = 65535


def encode_depth(depth: np.ndarray, fmt: str) -> bytes:
    """``[0, 1]`` float map → bytes of a uint16 ``.npy`` or 16-bit ``.png``."""
    q = np.clip(np.round(depth * float(DEPTH_SCALE)), 0, DEPTH_SCALE).astype(np.uint16)
    import io
    buf = io.BytesIO()
    if fmt == "npy":
        np.save(buf, q)
    elif fmt == "png":
        from PIL import Image
        Image.fromarray(q).save(buf, format="PNG")
    else:
        raise ValueError(f"depth format must be 'npy' or 'png', got {fmt!r}")
    return buf.getvalue()


def read_depth(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """A cached depth map as ``uint16 (h, w)`` (no integrity check: see :func:`load_cached_depth`)."""
    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r" if mmap else None)
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im).astype(np.uint16)


class CacheIntegrityError(ValueError):
    """A cached depth or RGB file that does not match its manifest record."""


def checksum(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}"


def file_check(data: bytes, kind: str = "depth") -> dict:
    """What a record stores to verify its ``kind`` (``depth`` or ``rgb``) file later: size and
    CRC-32 of the bytes."""
    return {f"{kind}_bytes": len(data), f"{kind}_crc32": checksum(data)}


def decode_depth(data: bytes, suffix: str) -> np.ndarray:
    import io
    if suffix == ".npy":
        m = np.load(io.BytesIO(data), allow_pickle=False)
    else:
        from PIL import Image
        with Image.open(io.BytesIO(data)) as im:
            m = np.asarray(im)
    if m.ndim != 2 or m.dtype not in (np.uint16, np.dtype(">u2"), np.int32, np.uint8):
        raise ValueError(f"not a 2-D 16-bit map (shape {m.shape}, {m.dtype})")
    return m.astype(np.uint16, copy=False)


# The RGB beside each map, at the map's size, so the loader never decodes an original (a
# 12-Mpx JPEG or a frame deep in a long-GOP video costs 0.1-2 s). Suffix per format.
RGB_FORMATS = {"jpeg": "jpg", "webp": "webp", "png": "png", "npy": "npy"}
RGB_QUALITY = 95            # jpeg / webp: docs/depth_cache.md gives its PSNR and size


def encode_rgb(rgb: np.ndarray, fmt: str) -> bytes:
    """``uint8 (h, w, 3)`` → bytes of ``fmt`` (:data:`RGB_FORMATS`); JPEG without chroma
    subsampling (disocclusion edges are colour edges)."""
    import io
    buf = io.BytesIO()
    if fmt == "npy":
        np.save(buf, np.ascontiguousarray(rgb, np.uint8))
        return buf.getvalue()
    from PIL import Image
    im = Image.fromarray(np.ascontiguousarray(rgb, np.uint8))
    if fmt == "jpeg":
        im.save(buf, format="JPEG", quality=RGB_QUALITY, subsampling=0)
    elif fmt == "webp":
        im.save(buf, format="WEBP", quality=RGB_QUALITY, method=4)
    elif fmt == "png":
        im.save(buf, format="PNG", compress_level=1)
    else:
        raise ValueError(f"rgb format must be one of {tuple(RGB_FORMATS)}, got {fmt!r}")
    return buf.getvalue()


def decode_rgb(data: bytes, suffix: str) -> np.ndarray:
    """Bytes of a stored RGB file → ``uint8 (h, w, 3)`` (possibly a strided view).

    JPEG (the default) goes through torchvision's decoder where it exists (the same
    libjpeg-turbo pixels as Pillow): Pillow decodes as fast but hands its image to numpy
    through its encoder, 1.5 ms more per 1024-px frame (4.4 vs 5.9 ms in a loop of 16-frame
    clips; the largest cost of a clip). torchvision deprecated its decoders in 0.29 for
    TorchCodec; where they are gone or fail (its PNG decoder rejects some of Pillow's PNGs),
    Pillow does the work."""
    import io
    if suffix == ".npy":
        m = np.load(io.BytesIO(data), allow_pickle=False)
    else:
        m = _decode_torchvision(data) if suffix == ".jpg" else None
        if m is None:
            from PIL import Image
            with Image.open(io.BytesIO(data)) as im:
                m = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    if m.ndim != 3 or m.shape[2] != 3 or m.dtype != np.uint8:
        raise ValueError(f"not an 8-bit RGB image (shape {m.shape}, {m.dtype})")
    return m


def _decode_torchvision(data: bytes) -> np.ndarray | None:
    """``uint8 (h, w, 3)`` by torchvision's image decoders, None where it has none."""
    import warnings
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_image
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities of "
                                "TorchVision", category=DeprecationWarning)
        try:
            t = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                             mode=ImageReadMode.RGB)
        except RuntimeError:        # Pillow decodes it or says why
            return None
    return t.permute(1, 2, 0).numpy()


def load_cached_depth(root: Path, rec: dict) -> np.ndarray:
    """The depth map of a record, verified against the size and CRC-32 the record holds
    (records of older caches without them are only decoded). Raises
    :class:`CacheIntegrityError` or OSError."""
    return _load_checked(Path(root) / rec["depth_file"], rec, "depth", decode_depth)


def load_cached_rgb(root: Path, rec: dict) -> np.ndarray:
    """The stored RGB of a record, ``uint8 (h, w, 3)`` at the depth's size, verified like the
    depth (:func:`load_cached_depth`). Raises :class:`CacheIntegrityError` or OSError."""
    return _load_checked(Path(root) / rec["rgb_file"], rec, "rgb", decode_rgb)


def _load_checked(path: Path, rec: dict, kind: str, decode) -> np.ndarray:
    data = path.read_bytes()
    why = mismatch(rec, data, kind=kind)
    if why:
        raise CacheIntegrityError(why)
    try:
        m = decode(data, path.suffix)
    except Exception as e:   # numpy/PIL raise several types for garbage
        raise CacheIntegrityError(f"undecodable ({type(e).__name__}: {e})") from None
    want = rec.get("depth_size")        # the RGB is stored at the depth's size
    if want and tuple(m.shape[1::-1]) != tuple(want):
        raise CacheIntegrityError(f"{'map' if kind == 'depth' else kind} is "
                                  f"{m.shape[1]}x{m.shape[0]}, the manifest says "
                                  f"{want[0]}x{want[1]}")
    return m


def mismatch(rec: dict, data: bytes | None = None, size: int | None = None,
             kind: str = "depth") -> str | None:
    """Why a ``kind`` (``depth`` / ``rgb``) file — its bytes, or only its size — does not
    match ``rec``; None if it does."""
    n = len(data) if data is not None else size
    want = rec.get(f"{kind}_bytes")
    if want is not None and n is not None and n != want:
        return f"size {n} bytes, the manifest says {want} bytes (truncated or overwritten)"
    if data is not None and f"{kind}_crc32" in rec and checksum(data) != rec[f"{kind}_crc32"]:
        return "checksum mismatch (the file was changed or damaged after it was written)"
    return None


def fingerprint(path: Path, with_hash: bool = False) -> dict:
    st = path.stat()
    fp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if with_hash:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        fp["sha256"] = h.hexdigest()
    return fp


def entry_label(rec: dict) -> str:
    """A record for a person: its path under the input root, `` #frame`` for a video frame."""
    return rec["rel"] + ("" if rec.get("frame") is None else f" #{rec['frame']}")


def entry_key(source: Path, frame: int | None) -> str:
    return f"{source}#{frame if frame is not None else 0}"


def error_key(source: Path) -> str:
    """The key of a video's error record (apart from its frames' entries)."""
    return f"{source}#error"


def shard_of(source: Path, n: int) -> int:
    """Deterministic shard of a source file (all frames of a video go together)."""
    return zlib.crc32(str(source).encode("utf-8", "surrogateescape")) % n


def depth_size(w: int, h: int, max_size: int | None) -> tuple[int, int]:
    if not max_size or max(w, h) <= max_size:
        return w, h
    s = max_size / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


# what every reader of an entry uses (--list, --show, --verify, training, export)
_ENTRY_FIELDS = {"key": str, "source": str, "rel": str, "kind": str, "depth_file": str,
                 "depth_size": list}


def _complete(rec) -> bool:
    """Whether a manifest line is a record the readers can use: a deletion, an error record
    (key, source, error), or an entry with every field they read, of the right types."""
    if not isinstance(rec, dict) or not isinstance(rec.get("key"), str):
        return False
    if rec.get("deleted"):
        return True
    if "error" in rec:
        return isinstance(rec.get("source"), str)
    if not all(isinstance(rec.get(k), t) for k, t in _ENTRY_FIELDS.items()):
        return False
    return "frame" in rec and (rec["frame"] is None or isinstance(rec["frame"], int))


class Manifest:
    """All records of a cache directory, merged (newest per key wins). Lines that are not
    usable records (torn by a kill, or valid JSON missing fields) are skipped and counted
    in ``bad_lines``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.entries: dict[str, dict] = {}
        self.errors: dict[str, dict] = {}
        self.origin: dict[str, str] = {}     # key -> manifest file of its newest record
        self.bad_lines = 0
        files = sorted(self.root.glob(MANIFEST_GLOB))
        for f in files:
            # a garbage line must not stop the read: it fails json.loads and is counted
            with open(f, "r", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                        key = rec["key"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        self.bad_lines += 1   # a torn line from a killed run
                        continue
                    if not _complete(rec):    # valid JSON, yet not a record every reader
                        self.bad_lines += 1   # can use (hand-edited, another tool): as torn
                        continue
                    self._add(key, rec, f.name)

    def _add(self, key: str, rec: dict, origin: str) -> None:
        if rec.get("deleted"):
            self.entries.pop(key, None)
            self.errors.pop(key, None)
            self.origin.pop(key, None)
            return
        target, other = (self.errors, self.entries) if "error" in rec else (self.entries, self.errors)
        old = target.get(key)
        if old is None or rec.get("time", 0) >= old.get("time", 0):
            target[key] = rec
            self.origin[key] = origin
            if key in other and other[key].get("time", 0) <= rec.get("time", 0):
                del other[key]

    def samples(self) -> list[dict]:
        """Cached entries in a stable order (source, frame)."""
        return sorted(self.entries.values(), key=lambda r: (r["source"], r["frame"] or 0))

    def depth_path(self, rec: dict) -> Path:
        return self.root / rec["depth_file"]

    def remove_files(self, rec: dict) -> None:
        """Delete an entry's files (its map and its RGB, where it has one)."""
        for kind in ("depth", "rgb"):
            if rec.get(f"{kind}_file"):
                (self.root / rec[f"{kind}_file"]).unlink(missing_ok=True)


class CacheBusyError(OSError):
    """Another live process writes the same manifest file (the message names it)."""


class ManifestWriter:
    """Appends records to one manifest file of a cache: ``manifest.jsonl``, or a shard's own
    file. One live writer per file (a :class:`~inpaint_online.fsutil.ProcessLock`); a second gets
    :class:`CacheBusyError`."""

    def __init__(self, root: Path, shard: tuple[int, int] | None):
        name = "manifest.jsonl" if shard is None else f"manifest.shard-{shard[0]}-of-{shard[1]}.jsonl"
        self.path = root / name
        root.mkdir(parents=True, exist_ok=True)
        try:
            self._lock = ProcessLock(root / f".{name}.lock", "precompute")
        except LockHeld as e:
            raise CacheBusyError(
                f"{show(root)}: {e.holder} is writing {name} of this cache; wait for it to end, "
                "or give each run its own part of the inputs with --shard i/n") from None
        torn = False
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
        self._fh = open(self.path, "a", encoding="utf-8")
        if torn:   # a killed run left half a line: start ours on a fresh one
            self._fh.write("\n")
        self._synced = 0.0

    # A record is flushed at once (a killed process loses nothing: the kernel has it) and
    # synced to the disk at most once a second rather than once per map (the maps themselves
    # are synced). A power cut loses at most the last second of records, whose maps are then
    # recomputed by the next run.
    SYNC_SECONDS = 1.0

    def append(self, rec: dict) -> None:
        rec = dict(rec, time=time.time_ns())
        self._fh.write(json.dumps(rec, sort_keys=True) + "\n")
        self._fh.flush()
        now = time.monotonic()
        if now - self._synced >= self.SYNC_SECONDS:
            os.fsync(self._fh.fileno())
            self._synced = now

    def compact(self, keep: dict[str, dict]) -> None:
        """Rewrite this manifest file atomically with the records in ``keep``."""
        self.close()
        lines = "".join(json.dumps(r, sort_keys=True) + "\n"
                        for r in sorted(keep.values(), key=lambda r: r["key"]))
        atomic_write_bytes(self.path, lines.encode())
        self._fh = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def finish(self) -> None:
        """Close the file and let another writer have it."""
        self.close()
        self._lock.release()


@dataclass
class Sampling:
    """Which frames of each video to cache (see :func:`media.sample_frames`)."""
    every: int = 1
    fps: float | None = None
    max_frames: int | None = 64
    clip_len: int = 1
    clip_stride: int | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Summary:
    images: int = 0
    videos: int = 0
    computed: int = 0
    skipped: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    pruned: int = 0
    seconds: float = 0.0
    stats: object = None                      # pipeline.Stats of the run
    rgb_added: int = 0                        # RGB stored for frames whose depth was kept
    frames_sized: int = 0                     # frames written by this run ...
    bytes_written: int = 0                    # ... and their depth + RGB bytes
    cache: dict = field(default_factory=dict)  # the whole cache (:meth:`measure`)

    def add_bytes(self, rec: dict) -> None:
        self.frames_sized += 1
        self.bytes_written += rec.get("depth_bytes", 0) + rec.get("rgb_bytes", 0)

    def per_frame(self) -> float | None:
        """Bytes per frame (depth + RGB) of what this run wrote so far."""
        return self.bytes_written / self.frames_sized if self.frames_sized else None

    def measure(self, manifest: "Manifest") -> None:
        """The size of the whole cache from its records: frames, depth and RGB bytes."""
        recs = manifest.samples()
        per = Counter(r["rel"] for r in recs if r["kind"] == "video")
        self.cache = {"frames": len(recs), "with_rgb": sum("rgb_bytes" in r for r in recs),
                      "depth": sum(r.get("depth_bytes", 0) for r in recs),
                      "rgb": sum(r.get("rgb_bytes", 0) for r in recs),
                      "images": sum(r["kind"] == "image" for r in recs),
                      "video_frames": dict(per)}

    def table(self, title: str = "precompute_depth summary") -> str:
        fps = self.computed / self.seconds if self.seconds > 0 else 0.0
        rows = [("images", self.images), ("videos", self.videos),
                ("frames computed", self.computed), ("frames already cached", self.skipped),
                ("errors", len(self.errors)), ("vanished sources", len(self.vanished)),
                ("pruned entries", self.pruned), ("seconds", f"{self.seconds:.1f}"),
                ("frames/s", f"{fps:.2f}")]
        if self.rgb_added:
            rows.insert(3, ("RGB added (depth kept)", self.rgb_added))
        if self.stats is not None and self.computed:
            st = self.stats
            rows.append(("model busy", f"{100 * st.busy():.0f}%"))
            rows.append(("waited for decoding", f"{st.wait_decode:.1f} s"))
        c = self.cache
        if c.get("frames"):
            n = c["frames"]
            d, r = c["depth"] / n, c["rgb"] / max(c["with_rgb"], 1)
            rows += [("cache frames", f"{n:,}"),
                     ("cache size", f"{(c['depth'] + c['rgb']) / 2 ** 30:.2f} GiB"),
                     ("KiB/frame depth+RGB", f"{d / 1024:.0f}+{r / 1024:.0f}"),
                     ("1M frames on disk", f"{(d + r) * 1e6 / 2 ** 30:,.0f} GiB")]
        out = ["", f"  {title}", "  " + "-" * 34]
        out += [f"  {k:<24}{v:>10}" for k, v in rows]
        vids = c.get("video_frames") or {}
        if vids:       # videos give many frames each, photos one: training draws per frame
            shown = sorted(vids.items(), key=lambda kv: -kv[1])[:6]
            out.append(f"  cached frames per source: {c.get('images', 0)} photos x 1; videos "
                       + ", ".join(f"{show(k)} {v}" for k, v in shown)
                       + (f" and {len(vids) - 6} more" if len(vids) > 6 else ""))
        for path, why in self.errors:
            out.append(f"  ERROR {show(path)}: {one_line(why)}")
        for path in self.vanished[:20]:
            out.append(f"  VANISHED {show(path)} (run with --prune to remove its entries)")
        if c.get("frames") and c["with_rgb"] < c["frames"]:
            out.append(f"  {c['frames'] - c['with_rgb']:,} cached frame(s) have no stored RGB: "
                       "training decodes their originals (slow for large photos and long-GOP "
                       "videos); run with --rgb-format jpeg (the default) to add it")
        return "\n".join(out)

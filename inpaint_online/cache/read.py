"""Reading a depth cache: its manifest, the (RGB, depth) frames of its records, and a plain
iterator over its pairs for people who use the cache outside training
(docs/design.md, "cache").

Readers never write: the cache is filled by :mod:`.fill` and checked by :mod:`.verify`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..errors import one_line, show
from ..media import MediaError, VideoReader, fit_frames, load_image
from .store import (
    DEPTH_SCALE,
    MANIFEST_GLOB,
    Manifest,
    fingerprint,
    load_cached_depth,
    load_cached_rgb,
)

__all__ = ["has_cache", "open_cache", "load_frames", "load_pair", "cache_pairs"]

log = logging.getLogger("inpaint_online.cache")


def has_cache(cache_dir: str | Path) -> bool:
    """Whether ``cache_dir`` is a depth cache folder (holds a manifest file)."""
    root = Path(cache_dir)
    return root.is_dir() and any(root.glob(MANIFEST_GLOB))


def open_cache(cache_dir: str | Path, rgb_from: str = "cache") -> Manifest:
    """The cache's manifest, or a clear error when there is no usable cache. With
    ``rgb_from="cache"`` one line says so when some entries have no stored RGB (a cache made
    before the cache held it): their originals are decoded, and a re-run adds it."""
    root = Path(cache_dir)
    if root.exists() and not root.is_dir():
        raise FileNotFoundError(f"{show(root)}: data.cache_dir is a file, not a depth cache folder")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no depth cache here (the directory does not exist). "
                                f"Run: python precompute_depth.py INPUT... --cache-dir {root}")
    manifest = Manifest(root)
    if not manifest.entries:
        extra = f" ({len(manifest.errors)} sources failed; see the manifest)" if manifest.errors else ""
        raise FileNotFoundError(f"{root}: the depth cache has no entries{extra}. "
                                f"Run: python precompute_depth.py INPUT... --cache-dir {root}")
    missing = sum("rgb_file" not in r for r in manifest.entries.values())
    if rgb_from == "cache" and missing:
        log.warning("%s: %d of %d cached frames have no stored RGB (a cache made before it held "
                    "RGB): their originals are decoded for every sample, which starves the "
                    "loader on large photos and long-GOP videos. Add it without recomputing the "
                    "depth: run the precompute_depth.py command that made the cache again",
                    show(root), missing, len(manifest.entries))
    return manifest


def load_frames(cache: Manifest | Path, recs: list[dict], reader=None,
                rgb_from: str = "cache", stack: bool = True):
    """RGB ``uint8 (T, h, w, 3)`` at the cached depth's size and depth ``uint16 (T, h, w)`` of
    one image record or of consecutive frames of one video (``stack=False``: lists of the T
    frames, without copying them into one array — the loader cuts a window out of each).

    The RGB comes from the cache where it is stored (``rgb_from="cache"``, the default);
    else, or with ``rgb_from="source"``, from the originals: a JPEG decoded reduced to the
    stored size, a video's consecutive frames with one ``get_batch``. ``cache``: the cache's
    :class:`Manifest` or its root folder. ``reader(path)`` may return an open
    :class:`~inpaint_online.media.VideoReader`.
    """
    root = cache.root if isinstance(cache, Manifest) else Path(cache)
    depths = [_checked(root, rec, "depth", load_cached_depth) for rec in recs]
    h, w = depths[0].shape
    if rgb_from == "cache" and all("rgb_file" in r for r in recs):
        rgb = [_checked(root, rec, "rgb", load_cached_rgb) for rec in recs]
        if stack:
            return np.stack(rgb), np.stack(depths)
        return rgb, depths
    _same_source(root, recs[0])
    if recs[0]["kind"] == "video":
        rgb = (reader or VideoReader)(recs[0]["source"]).get_batch([r["frame"] for r in recs])
        rgb = fit_frames(rgb, (w, h))
    else:
        rgb = fit_frames(load_image(recs[0]["source"], at_least=(w, h))[None], (w, h))
    if stack:
        return np.stack(rgb), np.stack(depths)
    return list(rgb), depths


def _same_source(root: Path, rec: dict) -> None:
    """The original is the file that was cached (its size and mtime as recorded), or one
    :class:`MediaError` line: a picture replaced after caching would be paired with the old
    depth, squeezed to its size. (The stored RGB needs no such check: it is the cached frame.)"""
    fp = rec.get("fingerprint")
    if not isinstance(fp, dict):
        return
    try:
        now = fingerprint(Path(rec["source"]))          # size and mtime, as precompute took it
    except OSError as e:
        raise MediaError(f"{show(rec['source'])}: {e.strerror or type(e).__name__}, and the "
                         "cache holds no RGB of it: restore the file, or drop its entries with "
                         f"precompute_depth.py INPUTS --cache-dir {show(root)} --prune") from None
    if any(now[k] != fp.get(k) for k in now):
        raise MediaError(f"{show(rec['source'])}: changed since it was cached (size or "
                         "modification time differ), so its cached depth no longer fits it; run "
                         f"precompute_depth.py on it again (--cache-dir {show(root)}) to refresh")


def _checked(root: Path, rec: dict, kind: str, load) -> np.ndarray:
    """A record's cached ``kind`` file, or one :class:`MediaError` line naming it and the fix."""
    try:
        return load(root, rec)
    except (OSError, ValueError) as e:
        why = (e.strerror or type(e).__name__) if isinstance(e, OSError) else one_line(e)
        raise MediaError(f"{show(root / rec[kind + '_file'])}: cached {kind} of "
                         f"{show(rec['source'])} is unusable ({why}); run: python "
                         f"precompute_depth.py --cache-dir {show(root)} --verify --repair") from None


def load_pair(cache: Manifest | Path, rec: dict, reader=None) -> tuple[np.ndarray, np.ndarray]:
    """RGB ``uint8 (h, w, 3)`` at the cached depth's size, and the depth ``uint16 (h, w)``."""
    rgb, depth = load_frames(cache, [rec], reader)
    return rgb[0], depth[0]


def cache_pairs(cache_dir: str | Path, *, kind: str | None = None):
    """Iterate a depth cache as ``(record, image, depth)``: the image ``float32 (3, h, w)``
    and the inverse depth ``float32 (1, h, w)``, both in [0, 1] (1 = near; the cache's
    :data:`DEPTH_SCALE` undone) at the cached size, writable tensors of their own.

    ``kind``: only ``"image"`` or ``"video"`` entries. An entry that cannot be read is skipped
    with one warning line (its file and why), like the training stream does::

        for rec, image, depth in cache_pairs("runs/demo/cache"):
            print(rec["rel"], rec["frame"], image.shape, float(depth.max()))
    """
    manifest = open_cache(cache_dir)
    for rec in manifest.samples():
        if kind is not None and rec["kind"] != kind:
            continue
        try:
            rgb, depth = load_pair(manifest, rec)
        except MediaError as e:
            log.warning("skipping %s", e)
            continue
        image = torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1).div_(255.0)
        d = torch.from_numpy(depth.astype(np.float32))[None].div_(float(DEPTH_SCALE))
        yield rec, image.contiguous(), d

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
from PIL import Image

from ..errors import one_line, show
from ..media import MediaError, VideoReader, load_image
from .store import DEPTH_SCALE, Manifest, load_cached_depth

__all__ = ["open_cache", "load_frames", "load_pair", "cache_pairs"]

log = logging.getLogger("inpaint_online.cache")


def open_cache(cache_dir: str | Path) -> Manifest:
    """The cache's manifest, or a clear error when there is no usable cache."""
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
    return manifest


def load_frames(cache: Manifest | Path, recs: list[dict], reader=None) -> tuple[np.ndarray, np.ndarray]:
    """RGB ``uint8 (T, h, w, 3)`` at the cached depth's size and depth ``uint16 (T, h, w)`` of
    one image record or of consecutive frames of one video (decoded with one ``get_batch``).

    ``cache``: the cache's :class:`Manifest` or its root folder. ``reader(path)`` may return
    an open :class:`~inpaint_online.media.VideoReader`.
    """
    root = cache.root if isinstance(cache, Manifest) else Path(cache)
    depths = []
    for rec in recs:
        path = root / rec["depth_file"]
        try:
            depths.append(load_cached_depth(root, rec))
        except (OSError, ValueError) as e:
            why = (e.strerror or type(e).__name__) if isinstance(e, OSError) else one_line(e)
            raise MediaError(f"{show(path)}: cached depth of {show(rec['source'])} is unusable "
                             f"({why}); run: python precompute_depth.py --cache-dir {show(root)} "
                             "--verify --repair") from None
    if recs[0]["kind"] == "video":
        rgb = (reader or VideoReader)(recs[0]["source"]).get_batch([r["frame"] for r in recs])
    else:
        rgb = load_image(recs[0]["source"])[None]
    h, w = depths[0].shape
    if rgb.shape[1:3] != (h, w):
        rgb = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BICUBIC))
                        for f in rgb])
    return rgb, np.stack(depths)


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

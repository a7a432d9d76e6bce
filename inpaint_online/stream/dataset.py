"""Streaming (image, depth) crops from the depth cache, for the DataLoader workers
(docs/design.md, "stream").

Workers only decode, resize, crop and flip on the CPU and return compact integer tensors
(``uint8`` RGB, ``int16`` depth) with the drawn colour jitter's factors; the jitter, the warp
and everything after them run in the main process on the training device (:mod:`.collate`).

Every random choice of a sample is drawn from a generator seeded by the sample's own seed,
which :class:`~.loader.StreamSampler` hands out together with the index. A sample is therefore the
same whatever the number of workers, and a resumed run continues the exact stream.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from ..cache import DEPTH_SCALE, Manifest, entry_label, load_frames
from ..errors import DataError, one_line, show
from ..media import MediaError, VideoReader
from .color import IDENTITY, draw_jitter
from .records import RecordTable, clip_runs, drop_small

__all__ = ["DataConfig", "CacheDataset", "window_size", "DEPTH_OFFSET"]

log = logging.getLogger("inpaint_online.stream")

# open video readers a forked worker inherited from its parent: kept alive, never used
_INHERITED: list = []

# The cache's uint16 depth travels from the workers to the collate as int16 (half the bytes
# of int32, exact): value - DEPTH_OFFSET.
DEPTH_OFFSET = 32768


@dataclass
class DataConfig:
    """Where the crops come from and how they are cut (the ``data:`` section of a config)."""
    source: str = "stream"                # stream: fresh masks from the depth cache every step;
                                          # folder: a fixed dataset in iw3's layout (data.folder)
    folder: str = ""                      # data.source folder: DIR with train/ and eval/
    val_from: str = "auto"                # auto | cache | folder: where a folder run validates
                                          # (auto: the cache's held-out samples when
                                          # data.cache_dir is a cache, else DIR/eval)
    cache_dir: str = "runs/demo/cache"
    crop: int = 256                       # side of the square training crop, pixels
    crop_window: float = 1.25             # > 1: cut a window this much larger; the collate
                                          # keeps the crop with the most hole pixels in it
    scale_range: tuple[float, float] = (0.5, 1.0)   # resize of the cached frame, log-uniform
    crop_candidates: int = 4              # candidate crops per sample ...
    hard_crop_p: float = 0.75             # ... the one with most depth edges wins with this p
    edge_threshold: float = 0.02          # horizontal depth step (of the 0..1 range) = an edge
    flip_p: float = 0.5                   # horizontal flip
    jitter_p: float = 0.5                 # photometric jitter (brightness/contrast/saturation/hue)
    jitter: tuple[float, float, float, float] = (0.2, 0.2, 0.2, 0.02)
    batch_size: int = 16
    num_workers: int = 4
    prefetch_factor: int = 4
    val_fraction: float = 0.05            # share of *sources* held out for validation ...
    val_sources: tuple[str, ...] = ()     # ... or these (paths or globs, matched against the
                                          # path under the input root, the file name, the path)
    val_count: int = 64                   # fixed validation samples, chosen from ...
    val_pool: int = 4                     # ... val_pool x val_count drawn: the ones whose holes
                                          # cover the most texture, sources in turn (1 = as drawn)
    val_seed: int = 1234
    reader_cache: int = 4                 # open video readers kept per worker
    clip_len: int = 1                     # > 1: clips of T consecutive video frames (video model)
    max_upscale: float = 4.0              # sources that need more to fill a crop are skipped
    worker_start: str = "fork"            # fork (fast start) | spawn | forkserver (DataLoader)
    composite_p: float = 0.0              # share of training samples made layered: a cut-out of
                                          # another source pasted in front (exact depth edges)
    composite_size: tuple[float, float] = (0.2, 0.45)   # the cut-out's radius, of the window
    composite_zoom: tuple[float, float] = (1.0, 1.0)    # a layered sample stands for a window of
                                          # a frame this many times wider (log-uniform draw): its
                                          # shift, in % of the frame width, makes wider holes
    composite_near: tuple[float, float] = (0.5, 0.5)   # where the training cut-out's plane
                                          # stands in the gap between the background's
                                          # nearest depth (0) and the maximum (1), drawn
                                          # uniformly; 1 = as near as a normalised map's
                                          # nearest object (validation composites: 0.5)
    composite_far: tuple[float, float] = (0.3, 0.6)    # the training background's depth
                                          # squeezed into this share of the range (drawn
                                          # uniformly): low = far behind its cut-out, as a
                                          # landscape behind a person (validation: 0.3-0.6)
    composite_plane: float = 0.0          # share of training composites whose background is a
                                          # slanted plane (in the same drawn share of the
                                          # range) instead of its own depth: a background
                                          # without holes of its own, as the rendered pairs'
    composite_limbs: int = 0              # training cut-outs get 1..N limbs too (thick strokes
                                          # from the blob, 3-15 % of the window wide): parts
                                          # narrower than the shift, whose holes have
                                          # background on both sides of a row (0 = blobs only)
    val_composite_p: float = 0.0          # the same for validation samples (cut-outs from the
                                          # held-out sources): holes with real geometry
    val_layered: bool = False             # also score a second validation set, all layered
                                          # (val_composite_p 1); best.pt is then the step
                                          # whose weaker margin over the two sets' best
                                          # classical fills is largest
    balance: str = "source"               # source: every source drawn equally often (a long
                                          # video's frames share one source's share); frame:
                                          # every cached frame (or clip) alike
    rgb_from: str = "cache"               # cache: the RGB precompute stored beside each map
                                          # (originals where a cache has none); source: always
                                          # decode the originals

    def validate(self) -> None:
        if self.source not in ("stream", "folder"):
            raise ValueError(f"data.source must be stream or folder, got {self.source!r}")
        if self.source == "folder" and not self.folder:
            raise ValueError("data.source folder needs data.folder (a folder with train/ and "
                             "eval/ in iw3's layout, e.g. a train_online.py --export-dir)")
        if self.balance not in ("source", "frame"):
            raise ValueError(f"data.balance must be source or frame, got {self.balance!r}")
        if self.val_from not in ("auto", "cache", "folder"):
            raise ValueError(f"data.val_from must be auto, cache or folder, got {self.val_from!r}")
        if self.crop < 16:
            raise ValueError(f"data.crop must be >= 16, got {self.crop}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"data.scale_range must be 0 < lo <= hi, got {self.scale_range}")
        lo, hi = self.composite_size
        if not 0 < lo <= hi <= 0.5:
            raise ValueError(f"data.composite_size must be 0 < lo <= hi <= 0.5, got {self.composite_size}")
        lo, hi = self.composite_near
        if not 0.1 <= lo <= hi <= 1.0:
            raise ValueError(f"data.composite_near must be 0.1 <= lo <= hi <= 1, got {self.composite_near}")
        lo, hi = self.composite_far
        if not 0.01 <= lo <= hi <= 0.9:
            raise ValueError(f"data.composite_far must be 0.01 <= lo <= hi <= 0.9, got {self.composite_far}")
        if not 0 <= self.composite_limbs <= 8:
            raise ValueError(f"data.composite_limbs must be in 0..8, got {self.composite_limbs}")
        lo, hi = self.composite_zoom
        if not 1.0 <= lo <= hi:
            raise ValueError(f"data.composite_zoom must be 1 <= lo <= hi, got {self.composite_zoom}")
        for name in ("hard_crop_p", "flip_p", "jitter_p", "val_fraction", "composite_p",
                     "val_composite_p", "composite_plane"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"data.{name} must be in [0, 1], got {v}")
        if not all(isinstance(v, str) and v for v in self.val_sources):
            raise ValueError(f"data.val_sources must be a list of paths or globs, got {self.val_sources!r}")
        if self.worker_start not in ("fork", "spawn", "forkserver"):
            raise ValueError(f"data.worker_start must be fork, spawn or forkserver, got {self.worker_start!r}")
        if self.rgb_from not in ("cache", "source"):
            raise ValueError(f"data.rgb_from must be cache or source, got {self.rgb_from!r}")
        if self.clip_len < 1:
            raise ValueError(f"data.clip_len must be >= 1, got {self.clip_len}")
        if not 1.0 <= self.crop_window <= 4.0:
            raise ValueError(f"data.crop_window must be in [1, 4], got {self.crop_window}")
        if not self.max_upscale >= 1:
            raise ValueError(f"data.max_upscale must be >= 1, got {self.max_upscale}")
        if self.val_pool < 1:
            raise ValueError(f"data.val_pool must be >= 1, got {self.val_pool}")
        if self.crop_candidates < 1 or self.batch_size < 1 or self.num_workers < 0:
            raise ValueError("data.crop_candidates and data.batch_size must be >= 1, "
                             "data.num_workers >= 0")


def window_size(config: DataConfig) -> int:
    """Side of the window the dataset cuts: ``data.crop`` enlarged by ``data.crop_window``."""
    return max(config.crop, int(round(config.crop * config.crop_window)))


class CacheDataset(Dataset):
    """Random crops of cached (image, depth) pairs — or, with ``config.clip_len = T > 1``,
    of clips of T consecutive video frames that share one crop, flip and jitter.

    ``dataset[(index, seed)]`` returns a dict of tensors:
    ``rgb`` uint8 ``(3, S, S)``, ``depth`` int16 ``(1, S, S)`` (uint16 − 32768) — with a
    leading ``T`` axis in clip mode, plus ``frames`` ``(T,)`` —,
    ``width`` the frame width in pixels at the drawn scale (shifts are measured in it),
    ``crop`` the side of the final crop (``S`` is the window, :func:`window_size`: the
    collate cuts the crop with the most holes out of it), ``index`` (into :attr:`items`),
    ``seed``, ``box`` (the window in cached-depth pixels, x0 y0 x1 y1), ``flip`` and
    ``jitter`` (the colour jitter's four factors, float ``(4,)``, :mod:`.color`: the collate
    applies them on the training device; identity when not drawn and outside training).
    """

    def __init__(self, manifest: Manifest | Path, records: list[dict], config: DataConfig,
                 train: bool = True):
        config.validate()
        self.root = manifest.root if isinstance(manifest, Manifest) else Path(manifest)
        self.cfg, self.train = config, train
        self.clip_len = config.clip_len
        records = drop_small(records, config)
        if self.clip_len > 1:
            items = clip_runs(records, self.clip_len)
            if not items:
                raise ValueError(
                    f"{self.root}: no video clips of >= {self.clip_len} consecutive cached "
                    f"frames among {len(records)} records; cache videos with "
                    f"precompute_depth.py --clip-len {self.clip_len} (or more)")
        else:
            items = [[r] for r in records]
        if not items:
            raise ValueError(f"{self.root}: no records to draw samples from")
        # item i = records starts[i] .. starts[i] + lengths[i] - 1 of the table
        self.table = RecordTable([r for it in items for r in it])
        self.lengths = np.array([len(it) for it in items], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self._readers: OrderedDict[str, VideoReader] = OrderedDict()
        self._pid = os.getpid()
        self._warned: set[str] = set()

    def __getstate__(self) -> dict:
        # spawn/forkserver workers get the dataset pickled: open decoders stay behind
        state = dict(self.__dict__)
        state["_readers"], state["_pid"] = OrderedDict(), -1
        return state

    def item(self, i: int) -> list[dict]:
        """The records of item ``i`` (one for an image or frame, a run of frames for clips)."""
        return [self.table[j] for j in range(self.starts[i], self.starts[i] + self.lengths[i])]

    def __len__(self) -> int:
        return len(self.lengths)

    def sample_weights(self) -> torch.Tensor | None:
        """Per item, how often the stream draws it (``data.balance``): ``source`` — every
        source (a photo, a video) equally often, its items sharing its share (a video's
        hundred frames no longer swamp the photos); ``frame`` — None, every item alike."""
        if self.cfg.balance == "frame":
            return None
        src = [self.table[int(i)]["source"] for i in self.starts]
        counts: dict[str, int] = {}
        for v in src:
            counts[v] = counts.get(v, 0) + 1
        return torch.tensor([1.0 / counts[v] for v in src], dtype=torch.double)

    def label(self, i: int) -> str:
        """Item ``i`` for a person: its source under the input root (and first frame)."""
        return entry_label(self.table[int(self.starts[int(i)])])

    def _reader(self, path: str) -> VideoReader:
        if self._pid != os.getpid():
            # a forked DataLoader worker: the parent's decoders (their threads, their locks)
            # did not come along. Using or even freeing them deadlocks in libav, so they are
            # parked, never touched, and this process opens its own.
            _INHERITED.append(self._readers)
            self._readers, self._pid = OrderedDict(), os.getpid()
        r = self._readers.pop(path, None) or VideoReader(path)
        self._readers[path] = r
        while len(self._readers) > max(1, self.cfg.reader_cache):
            self._readers.popitem(last=False)
        return r

    def __getitem__(self, key) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, key)
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            n = int(self.lengths[i])
            start = 0
            if n > self.clip_len:   # the window of a long run, drawn from the seed
                start = int(torch.randint(n - self.clip_len + 1, (1,),
                                          generator=torch.Generator().manual_seed(seed ^ 0x5EED)))
            first = int(self.starts[i]) + start
            recs = [self.table[j] for j in range(first, first + self.clip_len)]
            try:
                rgb, depth = load_frames(self.root, recs, self._reader, self.cfg.rgb_from,
                                         stack=False)
                out = self._sample(rgb, depth, i, seed)
            except Exception as e:  # noqa: BLE001 - one source's failure never stops a run
                if recs[0]["source"] not in self._warned:
                    self._warned.add(recs[0]["source"])
                    why = (one_line(e) if isinstance(e, MediaError) else
                           f"{show(recs[0]['source'])}: {type(e).__name__}: {one_line(e)}")
                    log.warning("skipping %s", why)
                continue
            if self.clip_len > 1:
                out["frames"] = torch.tensor([r["frame"] for r in recs])
            else:
                out["rgb"], out["depth"] = out["rgb"][0], out["depth"][0]
            return out
        raise DataError(f"{self.root}: none of the {len(self)} cached "
                           "sources could be read (see the warnings above)")

    def _sample(self, rgb: list[np.ndarray], depth: list[np.ndarray], index: int, seed: int) -> dict:
        """One crop/scale/flip/jitter draw applied to every frame of the T frames (lists of
        RGB ``(h, w, 3)`` and depth ``(h, w)`` arrays)."""
        c, s = self.cfg, window_size(self.cfg)
        g = torch.Generator().manual_seed(seed)
        rand = lambda n=1: torch.rand(n, generator=g)  # noqa: E731
        h, w = depth[0].shape
        lo, hi = c.scale_range
        f = _log_uniform(lo, hi, float(rand()))
        f = max(f, s / min(h, w))                   # small frames are scaled up to fit a crop
        # the window is a whole-pixel square of the cached frame, ``side`` px, resized to s:
        # the drawn scale rounded to it (at most half a pixel of ``side``)
        side = min(h, w, max(1, round(s / f)))
        f = s / side
        fw = w * f
        xs = (rand(c.crop_candidates) * (w - side + 1)).floor().clamp(max=w - side).long()
        ys = (rand(c.crop_candidates) * (h - side + 1)).floor().clamp(max=h - side).long()
        pick = 0
        if c.crop_candidates > 1 and float(rand()) < c.hard_crop_p:
            # the edges of the candidates' bounding rectangle only (a frame is up to 4x more)
            ax, ay = int(xs.min()), int(ys.min())
            bx, by = int(xs.max()) + side, int(ys.max()) + side
            lx = max(0, ax - 1)                     # a pixel's step is from its left one
            edge = _edge_map(depth[len(depth) // 2][ay:by, lx:bx], c.edge_threshold)[:, ax - lx:]
            scores = [np.count_nonzero(edge[y - ay:y - ay + side, x - ax:x - ax + side])
                      for x, y in zip(xs.tolist(), ys.tolist())]
            pick = int(np.argmax(scores))
        x0, y0 = int(xs[pick]), int(ys[pick])
        box = (x0, y0, x0 + side, y0 + side)
        img = _resize_square([fr[y0:y0 + side, x0:x0 + side] for fr in rgb], s)
        d_t = _resize_square([dp[y0:y0 + side, x0:x0 + side] for dp in depth], s)
        flip = bool(float(rand()) < c.flip_p)
        if flip:
            img, d_t = img.flip(-1), d_t.flip(-1)
        img = img.contiguous()
        d_c = d_t[:, 0].numpy()
        jitter = torch.tensor(IDENTITY, dtype=torch.float32)    # applied by the collate
        if self.train and float(rand()) < c.jitter_p:
            jitter = draw_jitter(g, c.jitter)
        p = c.composite_p if self.train else c.val_composite_p
        if p > 0 and float(rand()) < p:
            made = self._composite(img, d_c, index, g)
            if made is not None:
                img, d_c = made
                lo, hi = c.composite_zoom
                if hi > 1.0:       # drawn only when asked: other configs keep their draws
                    fw *= _log_uniform(lo, hi, float(rand()))
        d16 = torch.from_numpy(np.ascontiguousarray(
            np.clip(np.rint(d_c), 0, DEPTH_SCALE).astype(np.int32) - DEPTH_OFFSET).astype(np.int16))[:, None]
        return {"rgb": img, "depth": d16, "width": torch.tensor(fw, dtype=torch.float32),
                "crop": torch.tensor(c.crop),
                "index": torch.tensor(index), "seed": torch.tensor(seed),
                "box": torch.tensor(box, dtype=torch.float32), "flip": torch.tensor(flip),
                "jitter": jitter}

    def _composite(self, img: torch.Tensor, depth: np.ndarray, index: int,
                   g: torch.Generator) -> tuple[torch.Tensor, np.ndarray] | None:
        """A layered sample with *exact* depth edges: a blob-shaped cut-out of another
        source (a random window of its first frame) pasted in front of this sample, on every
        frame. The background keeps its own depth, squeezed into the lower 30-60 % of the
        range (training: ``data.composite_far``; with ``data.composite_plane`` a slanted plane
        in that share instead); the cut-out stands on a plane nearer than
        all of it. Warped, the cut-out's edge makes the holes a real conversion has — on the
        background side, with the content behind them known (this sample's own pixels).
        None when the other source cannot be read (the sample stays as it is).

        Why: with the fallback depth (or any depth whose edges miss the image's), the holes
        of ordinary samples do not start at object edges, and a model learns to fill from
        every side — measured worse than a background-side fill on true disocclusions."""
        t, _, s, _ = img.shape
        if len(self) < 2:
            return None
        j = (index + 1 + int(torch.randint(len(self) - 1, (1,), generator=g))) % len(self)
        u = torch.rand(12, generator=g).tolist()
        try:
            rgb, _ = load_frames(self.root, [self.table[int(self.starts[j])]], self._reader,
                                   self.cfg.rgb_from)
        except Exception:  # noqa: BLE001 - a composite is optional
            return None
        fr = rgb[0]
        h, w = fr.shape[:2]
        side = min(h, w)
        fx, fy = u[0] * (w - side), u[1] * (h - side)
        fg = np.asarray(Image.fromarray(fr).resize((s, s), Image.Resampling.BILINEAR,
                                                   box=(fx, fy, fx + side, fy + side)))
        lo, hi = self.cfg.composite_size
        radius = s * (lo + (hi - lo) * u[2])
        cy, cx = s * (0.25 + 0.5 * u[3]), s * (0.25 + 0.5 * u[4])
        yy, xx = np.mgrid[:s, :s].astype(np.float32)
        ang = np.arctan2(yy - cy, xx - cx)
        r = radius * (1 + 0.25 * (u[5] - 0.5) * np.cos(2 * ang + 6.28 * u[6])
                      + 0.2 * (u[7] - 0.5) * np.cos(3 * ang + 6.28 * u[8])
                      + 0.15 * (u[9] - 0.5) * np.cos(5 * ang + 6.28 * u[10]))
        dist = np.hypot(yy - cy, xx - cx)
        alpha = np.clip(r - dist + 0.5, 0, 1)                # a 1-px anti-aliased edge
        if self.train and self.cfg.composite_limbs:    # drawn only when asked (other draws kept)
            alpha = np.maximum(alpha, _limbs(xx, yy, cx, cy, radius, self.cfg.composite_limbs, g))
        matte = alpha >= 0.5
        if not matte.any():
            return None
        # validation composites keep the defaults, so the layered measure stays comparable
        lo, hi = self.cfg.composite_far if self.train else DataConfig.composite_far
        squeeze = lo + (hi - lo) * u[11]
        bg = depth.astype(np.float32) * squeeze
        if self.train and self.cfg.composite_plane > 0:     # drawn only when asked
            v = torch.rand(3, generator=g).tolist()
            if v[0] < self.cfg.composite_plane:
                bg = np.broadcast_to(_plane(xx, yy, squeeze * DEPTH_SCALE, v[1], v[2]), bg.shape)
        top = float(bg.max())
        lo, hi = self.cfg.composite_near if self.train else DataConfig.composite_near
        f = lo + (hi - lo) * float(torch.rand(1, generator=g)) if hi > lo else lo   # drawn when asked
        near = top + (DEPTH_SCALE - top) * f                       # in front of all the background
        a = torch.from_numpy(alpha)[None, None]
        out = img.float() * (1 - a) + torch.from_numpy(np.array(fg)).permute(2, 0, 1)[None].float() * a
        d = np.where(matte[None], np.float32(near), bg)
        return out.round().clamp(0, 255).to(torch.uint8), d


def _plane(xx: np.ndarray, yy: np.ndarray, top: float, u_slope: float, u_dir: float) -> np.ndarray:
    """A slanted plane's depth on the window's pixel grids: ``top`` on one side, falling
    linearly in the direction drawn by ``u_dir`` to 40-100 % of it (``u_slope``) at the
    other: a wall or a landscape behind the cut-out, in the rendered pairs' layout."""
    ang = 6.2832 * u_dir
    t = (xx - xx.mean()) * math.cos(ang) + (yy - yy.mean()) * math.sin(ang)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)          # 0 at the near side
    return (top * (1 - (0.6 * u_slope) * t)).astype(np.float32)


def _limbs(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, radius: float, most: int,
           g: torch.Generator) -> np.ndarray:
    """The alpha ``(s, s)`` (on the window's pixel grids ``xx``, ``yy``) of 1..``most`` limbs of
    a cut-out centred at (``cx``, ``cy``):
    thick strokes (3-15 % of the window wide, 25-75 % long, round ends, a 1-px soft edge)
    from a point inside the blob in any direction — legs, arms, poles. A limb narrower than
    the shift leaves a hole with background on both sides of a row and the cut-out above or
    below it, which blobs wider than every shift never do."""
    n = 1 + int(torch.randint(most, (1,), generator=g))
    v = torch.rand(n, 5, generator=g).tolist()
    s = xx.shape[-1]
    alpha = np.zeros(xx.shape, np.float32)
    for a, b, ang, length, width in v:
        x0 = cx + radius * 0.5 * (2 * a - 1)
        y0 = cy + radius * 0.5 * (2 * b - 1)
        dx, dy = math.cos(6.2832 * ang), math.sin(6.2832 * ang)
        ln = s * (0.25 + 0.5 * length)
        t = np.clip((xx - x0) * dx + (yy - y0) * dy, 0, ln)       # along the stroke
        dist = np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy))
        half = s * (0.015 + 0.06 * width)
        alpha = np.maximum(alpha, np.clip(half - dist + 0.5, 0, 1))
    return alpha


def _edge_map(depth: np.ndarray, threshold: float) -> np.ndarray:
    """Where a horizontal depth step exceeds ``threshold`` (the holes' birthplaces), bool.

    The few candidate boxes count their pixels directly: at 1024-px frames that costs a fifth
    of an integral image's two int64 cumsums (measured 16 ms per sample with them, the
    largest single cost of a sample from the cache; the counts are the same)."""
    d = depth.astype(np.float32) * (1.0 / DEPTH_SCALE)
    edge = np.zeros(d.shape, bool)
    edge[:, 1:] = np.abs(d[:, 1:] - d[:, :-1]) > threshold
    return edge


def _resize_square(frames: list[np.ndarray], size: int) -> torch.Tensor:
    """Square cuts of T frames (RGB ``uint8 (k, k, 3)`` or depth ``uint16 (k, k)``) resized
    to ``size``: RGB ``uint8 (T, 3, size, size)``, depth ``float32 (T, 1, size, size)``.

    Bilinear, antialiased when shrinking (PIL's filter; within 2 levels of Pillow's RGB),
    the whole clip in one call: torch's channels-last uint8 path resizes a 16-frame clip 6x
    faster than Pillow frame by frame (6.5 vs 42 ms at 520 → 320 px)."""
    k = frames[0].shape[0]
    if frames[0].ndim == 3:
        x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)      # channels-last view
    else:
        x = torch.from_numpy(np.stack(frames).astype(np.float32))[:, None]
    if k != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    return x


def _log_uniform(lo: float, hi: float, u: float) -> float:
    """``u`` in [0, 1) mapped log-uniformly onto [lo, hi] (scale and zoom draws)."""
    return math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u)



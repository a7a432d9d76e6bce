"""Training from a fixed dataset in iw3's layout (``data.source: folder``; docs/training.md,
"Training from a fixed dataset").

A folder of ``NAME_M.png`` (hole mask, gray, > 0 = hole) beside ``NAME_C.png`` (the target,
RGB) — an ``--export-dir`` of this project or data made by iw3's own generator — in
``DIR/train`` and ``DIR/eval``; for clips (``data.clip_len > 1``) one sub-folder per clip with
frames ``0000_C.png``, ``0000_M.png``, ... Samples are in right-view orientation (the
background lies right of every hole), as both writers store them.

:class:`FolderDataset` (DataLoader workers, CPU) cuts the training crop as iw3's trainer does:
``data.crop_candidates`` random crops, the one with the most colour variation for images (the
most hole pixels for clips, as iw3's video trainer); a random window of ``clip_len`` frames of
a clip, in reverse order half of the time; held-out samples take the grid crop (stride a
quarter of the crop) with the most hole pixels and a clip's middle frames. No horizontal flip:
it would put the background left of the holes. :class:`FolderCollate` (training device)
applies the workers' colour jitter draw and iw3's mask widening (``collate.widen_*``) and makes
the :class:`~.batch.Batch`. Every draw comes from the sample's or the step's seed, so a resumed
run continues the same stream, as with the warp stream.

Unreadable pairs, pairs of different sizes, masks without a hole and samples smaller than the
crop are skipped with one line each (per worker), the next sample taking their place.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DataError, one_line, show
from .batch import Batch
from .collate import CollateConfig, hide_holes, widen_drawn
from .color import IDENTITY, draw_jitter, jitter_frames
from .dataset import DataConfig
from .records import mix_seed

__all__ = ["FolderDataset", "FolderCollate", "orientation_depth", "split_folder"]

log = logging.getLogger("inpaint_online.stream")


def split_folder(root: str | Path, split: str) -> Path:
    """``root/split`` of an iw3-layout dataset; a DataError naming what is missing."""
    d = Path(root) / split
    if not d.is_dir():
        raise DataError(f"{show(root)}: no '{split}' folder (data.folder must hold iw3's layout: "
                        f"{split}/NAME_C.png + {split}/NAME_M.png, e.g. a train_online.py "
                        "--export-dir)")
    return d


class _BadSample(Exception):
    """A pair that cannot be trained on (the message names the file and why)."""


class FolderDataset(Dataset):
    """The pairs of one split folder. ``dataset[(index, seed)]`` returns ``rgb`` uint8
    ``(3, S, S)``, ``mask`` uint8 ``(1, S, S)`` (1 = hole) — with a leading ``T`` axis for
    clips —, ``index``, ``seed`` and ``jitter`` (identity outside training), ``S`` =
    ``data.crop``."""

    def __init__(self, split_dir: str | Path, config: DataConfig, train: bool = True):
        config.validate()
        self.root, self.cfg, self.train = Path(split_dir), config, train
        self.clip_len = config.clip_len
        self._warned: set[str] = set()
        items, missing = [], []
        if self.clip_len > 1:
            for d in sorted(p for p in self.root.iterdir() if p.is_dir()):
                frames, lost = _pairs(d)
                missing += lost
                if len(frames) >= self.clip_len:
                    items.append(frames)
                elif frames:
                    log.warning("skipping %s: %d frames, data.clip_len is %d", show(d),
                                len(frames), self.clip_len)
        else:
            pairs, missing = _pairs(self.root)
            items = [[p] for p in pairs]
        if missing:
            log.warning("skipping %d mask(s) without their _C.png in %s (first: %s)",
                        len(missing), show(self.root), missing[0].name)
        if not items:
            what = (f"clip folders of >= {self.clip_len} frames" if self.clip_len > 1
                    else "NAME_M.png + NAME_C.png pairs")
            raise DataError(f"{show(self.root)}: no {what} to train on")
        self.items = items                  # per item: the frames' mask paths, in order

    def __len__(self) -> int:
        return len(self.items)

    def sample_weights(self) -> None:
        """Every sample alike (a fixed dataset's samples are already drawn)."""
        return None

    def label(self, index: int) -> str:
        """The sample for a person: its name (a clip: its folder)."""
        first = self.items[int(index)][0]
        return first.parent.name if self.clip_len > 1 else first.name[:-len("_M.png")]

    def __getitem__(self, key) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, key)
        tries = min(len(self), 64)
        for attempt in range(tries):
            i = (index + attempt) % len(self)
            try:
                return self._sample(i, seed)
            except _BadSample as e:
                if str(e) not in self._warned:
                    self._warned.add(str(e))
                    log.warning("skipping %s", e)
        raise DataError(f"{show(self.root)}: {tries} samples in a row could not be used (see "
                        "the warnings above)")

    def _sample(self, i: int, seed: int) -> dict:
        c, size = self.cfg, self.cfg.crop
        g = torch.Generator().manual_seed(seed)
        masks = self.items[i]
        if self.clip_len > 1:
            n = len(masks)
            if self.train:
                start = int(torch.randint(n - self.clip_len + 1, (1,), generator=g))
                masks = masks[start:start + self.clip_len]
                if float(torch.rand(1, generator=g)) < 0.5:
                    masks = masks[::-1]
            else:
                start = (n - self.clip_len) // 2
                masks = masks[start:start + self.clip_len]
        rgb, hole = zip(*(_read_pair(p, size) for p in masks))
        if len({a.shape for a in rgb}) > 1:
            raise _BadSample(f"{show(masks[0].parent)}: its frames differ in size")
        rgb = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2)        # (T, 3, H, W)
        hole = torch.from_numpy(np.stack(hole))[:, None]                  # (T, 1, H, W)
        if self.train:
            oy, ox = _train_crop(rgb, hole, size, c.crop_candidates, g, by_mask=self.clip_len > 1)
        else:
            oy, ox = _held_out_crop(hole, size)
        rgb = rgb[..., oy:oy + size, ox:ox + size].contiguous()
        hole = hole[..., oy:oy + size, ox:ox + size].contiguous()
        jitter = torch.tensor(IDENTITY, dtype=torch.float32)
        if self.train and c.jitter_p > 0 and float(torch.rand(1, generator=g)) < c.jitter_p:
            jitter = draw_jitter(g, c.jitter)
        out = {"rgb": rgb, "mask": hole, "index": torch.tensor(i), "seed": torch.tensor(seed),
               "jitter": jitter}
        if self.clip_len == 1:
            out["rgb"], out["mask"] = rgb[0], hole[0]
        return out


def _pairs(folder: Path) -> tuple[list[Path], list[Path]]:
    """The ``*_M.png`` of ``folder`` that have a ``*_C.png`` (sorted), and those that do not."""
    have, missing = [], []
    for m in sorted(folder.glob("*_M.png")):
        (have if m.with_name(m.name[:-6] + "_C.png").is_file() else missing).append(m)
    return have, missing


def _read_pair(mask_path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb uint8 (H, W, 3), hole uint8 (H, W))`` of one pair, or :class:`_BadSample`."""
    rgb_path = mask_path.with_name(mask_path.name[:-6] + "_C.png")
    try:
        with Image.open(rgb_path) as im:
            rgb = np.asarray(im.convert("RGB"))
        with Image.open(mask_path) as im:
            hole = (np.asarray(im.convert("L")) > 0).astype(np.uint8)
    except Exception as e:  # noqa: BLE001 - a bad pair is skipped, never the run
        raise _BadSample(f"{show(mask_path)}: unreadable ({type(e).__name__}: {one_line(e)})") from None
    if rgb.shape[:2] != hole.shape:
        raise _BadSample(f"{show(mask_path)}: mask {hole.shape[1]}x{hole.shape[0]}, image "
                         f"{rgb.shape[1]}x{rgb.shape[0]}: sizes differ")
    if not hole.any():
        raise _BadSample(f"{show(mask_path)}: the mask has no hole pixel")
    if min(hole.shape) < size:
        raise _BadSample(f"{show(mask_path)}: {hole.shape[1]}x{hole.shape[0]} is smaller than "
                         f"data.crop={size}")
    return rgb, hole


def _train_crop(rgb: torch.Tensor, hole: torch.Tensor, size: int, k: int, g: torch.Generator,
                by_mask: bool) -> tuple[int, int]:
    """iw3's random hard-example crop: ``k`` random corners, the one whose crop has the most
    colour variation (sum of the channels' standard deviations of the first frame) — or, for
    clips, the most hole pixels."""
    h, w = hole.shape[-2:]
    ys = torch.randint(0, h - size + 1, (k,), generator=g).tolist()
    xs = torch.randint(0, w - size + 1, (k,), generator=g).tolist()
    if by_mask:
        score = [float(hole[..., y:y + size, x:x + size].sum()) for y, x in zip(ys, xs)]
    else:
        score = [float(rgb[0, :, y:y + size, x:x + size].float().std(dim=(1, 2)).sum())
                 for y, x in zip(ys, xs)]
    best = max(range(k), key=lambda j: (score[j], -j))
    return ys[best], xs[best]


def _held_out_crop(hole: torch.Tensor, size: int) -> tuple[int, int]:
    """iw3's fixed hard-example crop: the grid crop (stride ``size // 4``) with the most hole
    pixels, the first in row order on ties."""
    h, w = hole.shape[-2:]
    step = max(1, size // 4)
    counts = hole.float().sum(dim=tuple(range(hole.dim() - 2)))
    best, where = -1.0, (0, 0)
    for y in range(0, h - size + 1, step):
        for x in range(0, w - size + 1, step):
            s = float(counts[y:y + size, x:x + size].sum())
            if s > best:
                best, where = s, (y, x)
    return where


def orientation_depth(n: int, h: int, w: int, device) -> torch.Tensor:
    """``(n, 1, h, w)``: what a fixed dataset's samples carry instead of depth — nearer to the
    left, farther to the right (the right-view orientation both writers store), so the
    background-side classical fills take the right side of every hole."""
    ramp = torch.linspace(1.0, 0.0, w, device=device).view(1, 1, 1, w)
    return ramp.expand(n, 1, h, w)


class FolderCollate:
    """A CPU batch of :class:`FolderDataset` → :class:`Batch` on the device: the workers'
    colour jitter, iw3's mask widening (``collate.widen_*``, drawn from a generator seeded by
    ``(seed, rank, step)``), ``x = y · (1 − mask)``. ``params`` is ``None``: no warp made these
    holes."""

    def __init__(self, config: CollateConfig | None = None, *, device: str | torch.device = "cpu",
                 seed: int = 0, rank: int = 0, augment: bool = True):
        self.cfg = config or CollateConfig()
        self.cfg.validate()
        self.device = torch.device(device)
        self.seed, self.rank, self.augment = seed, rank, augment

    def __call__(self, batch: dict, step: int) -> Batch:
        c, dev = self.cfg, self.device
        g = torch.Generator().manual_seed(mix_seed(self.seed, "folder", self.rank, step))
        nb = dev.type == "cuda"
        clip = batch["rgb"].dim() == 5
        n = batch["rgb"].shape[0]
        t = batch["rgb"].shape[1] if clip else 1
        flat = (lambda v: v.flatten(0, 1)) if clip else (lambda v: v)   # noqa: E731
        y = flat(batch["rgb"].to(dev, non_blocking=nb)).float().div_(255.0)
        mask = flat(batch["mask"].to(dev, non_blocking=nb)).bool()
        if self.augment and "jitter" in batch:
            y = jitter_frames(y, batch["jitter"], t, self.device.type == "cpu")
            mask = widen_drawn(mask, c, n, t, g)
        depth = orientation_depth(n * t, y.shape[-2], y.shape[-1], dev)
        x, m, y, depth = hide_holes(y, mask, depth, n, t, clip)
        meta = {k: batch[k] for k in ("index", "seed") if k in batch}
        return Batch(x=x, mask=m, y=y, depth=depth, params=None, meta=meta)


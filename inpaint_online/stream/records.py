"""What the stream draws from: the cache's records split into training and held-out sources,
filtered, grouped into clips, packed into flat arrays, and the seeds that make every draw
reproducible (docs/design.md, "stream")."""

from __future__ import annotations

import fnmatch
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import show

if TYPE_CHECKING:
    from .dataset import DataConfig

__all__ = ["mix_seed", "split_records", "drop_small", "clip_runs", "RecordTable"]

log = logging.getLogger("inpaint_online.stream")


def mix_seed(*parts: int | str) -> int:
    """A 63-bit seed from several integers (stable across processes and machines)."""
    h = hashlib.blake2b("/".join(map(str, parts)).encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def split_records(records: list[dict], val_fraction: float,
                  val_sources: tuple[str, ...] | list[str] = ()) -> tuple[list[dict], list[dict]]:
    """Hold out whole *sources* (all frames of a video go together) for validation.

    ``val_sources`` (``data.val_sources``): exactly the sources that match one of these
    paths or globs (against the path under the input root, the file name or the full path);
    a pattern that matches nothing, or one that takes every source, is a ValueError.
    Otherwise ``val_fraction`` of the sources, chosen by a hash of each source's path
    relative to its input root, so the same on every machine. With a single source the
    validation set is that source too (logged).
    """
    if val_sources:
        def hit(r, pat):
            return any(fnmatch.fnmatchcase(v, pat) for v in (r["rel"], Path(r["rel"]).name, r["source"]))
        held = set()
        for pat in val_sources:
            got = {r["rel"] for r in records if hit(r, pat)}
            if not got:
                raise ValueError(f"data.val_sources: {pat!r} matches no cached source")
            held |= got
        if held == {r["rel"] for r in records}:
            raise ValueError("data.val_sources holds out every cached source: nothing is left to train on")
        return ([r for r in records if r["rel"] not in held], [r for r in records if r["rel"] in held])
    sources = sorted({r["rel"] for r in records},
                     key=lambda s: hashlib.sha1(s.encode("utf-8", "surrogateescape")).hexdigest())
    if val_fraction <= 0:
        return records, []
    if len(sources) < 2:
        log.warning("only one source in the cache: validation samples come from it too")
        return records, records
    n_val = min(len(sources) - 1, max(1, round(val_fraction * len(sources))))
    held = set(sources[:n_val])
    return ([r for r in records if r["rel"] not in held], [r for r in records if r["rel"] in held])


def drop_small(records: list[dict], config: DataConfig) -> list[dict]:
    """Records whose frame fills a ``data.crop`` crop with at most ``data.max_upscale``
    enlargement; the others are skipped with one warning line (a 2x2000 image scaled up 128
    times is a flat smear: no holes, no texture, a NaN score)."""
    need = config.crop / config.max_upscale
    keep, small = [], []
    for r in records:
        (small if min(r.get("depth_size") or (1 << 30,)) < need else keep).append(r)
    if small:
        names = sorted({f"{show(r['rel'])} ({r['depth_size'][0]}x{r['depth_size'][1]})"
                        for r in small})
        log.warning("skipping %d cached frame(s) smaller than data.crop / data.max_upscale = %g "
                    "px on the short side: %s%s", len(small), need, ", ".join(names[:5]),
                    f" and {len(names) - 5} more" if len(names) > 5 else "")
    return keep


def clip_runs(records: list[dict], clip_len: int) -> list[list[dict]]:
    """Runs of consecutive cached frames of one video, at least ``clip_len`` long.

    Frames cached with ``precompute_depth.py --clip-len T`` come in clips (records share
    ``clip`` = the clip's first frame); a sample takes a window of ``clip_len`` of a run.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r["kind"] == "video":
            groups.setdefault((r["source"], r.get("clip")), []).append(r)
    runs = []
    for key in sorted(groups, key=lambda k: (k[0], k[1] if k[1] is not None else -1)):
        frames = sorted(groups[key], key=lambda r: r["frame"])
        cur = [frames[0]]
        for r in frames[1:]:
            if r["frame"] == cur[-1]["frame"] + 1:
                cur.append(r)
            else:
                runs.append(cur)
                cur = [r]
        runs.append(cur)
    return [r for r in runs if len(r) >= clip_len]


class RecordTable:
    """Records as flat numpy arrays: no Python object per record.

    DataLoader workers are forked; touching millions of dicts (reference counts, the garbage
    collector) would copy them page by page into every worker. Fixed-width byte strings and
    integer arrays are shared and stay shared.
    """

    FIELDS = ("source", "rel", "depth_file")

    def __init__(self, records: list[dict]):
        for f in self.FIELDS:
            # surrogateescape: file names that are not UTF-8 (old Latin-1 disks) round-trip
            setattr(self, f, np.array([r[f].encode("utf-8", "surrogateescape") for r in records],
                                      dtype=bytes))
        self.video = np.array([r["kind"] == "video" for r in records], dtype=bool)
        self.frame = np.array([-1 if r.get("frame") is None else r["frame"] for r in records], np.int64)
        self.clip = np.array([-1 if r.get("clip") is None else r["clip"] for r in records], np.int64)
        # what verifies the depth and RGB files (-1: a record of an older cache without it)
        for kind in ("depth", "rgb"):
            setattr(self, f"{kind}_nbytes",
                    np.array([r.get(f"{kind}_bytes", -1) for r in records], np.int64))
            setattr(self, f"{kind}_crc", np.array([int(r[f"{kind}_crc32"], 16)
                                                   if f"{kind}_crc32" in r else -1
                                                   for r in records], np.int64))
        self.rgb_file = np.array([r.get("rgb_file", "").encode("utf-8", "surrogateescape")
                                  for r in records], dtype=bytes)
        self.size = np.array([r.get("depth_size") or (-1, -1) for r in records], np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, i: int) -> dict:
        out = {f: getattr(self, f)[i].decode("utf-8", "surrogateescape") for f in self.FIELDS}
        video = bool(self.video[i])
        out["kind"] = "video" if video else "image"
        out["frame"] = int(self.frame[i]) if video or self.frame[i] >= 0 else None
        out["clip"] = int(self.clip[i]) if self.clip[i] >= 0 else None
        for kind in ("depth", "rgb"):
            if getattr(self, f"{kind}_nbytes")[i] >= 0:
                out[f"{kind}_bytes"] = int(getattr(self, f"{kind}_nbytes")[i])
            if getattr(self, f"{kind}_crc")[i] >= 0:
                out[f"{kind}_crc32"] = f"{int(getattr(self, f'{kind}_crc')[i]):08x}"
        if self.rgb_file[i]:
            out["rgb_file"] = self.rgb_file[i].decode("utf-8", "surrogateescape")
        if self.size[i, 0] >= 0:
            out["depth_size"] = self.size[i].tolist()
        return out

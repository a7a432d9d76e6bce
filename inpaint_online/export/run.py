"""``--export-dir``: materialise the streaming stage as a fixed dataset that iw3's own
inpainting trainer reads (nunif ``iw3/training/inpaint/dataset.py``, ``dataset_video.py``).

    DIR/P.export.json               settings of export P (config, size, clip length)
    DIR/P.progress.json             per split: next stream position, written, dropped
    DIR/train/P_00000000_C.png      target crop (RGB)           ← iw3's trainer pairs every
    DIR/train/P_00000000_M.png      hole mask (L, 0 / 255)      ← *_M.png with its *_C.png
    DIR/train/P_00000000_I.png      masked input C·(1−M) (unless masked_input=False; ignored by iw3)
    DIR/train/P.index.jsonl         one line per sample: source, frame, crop box, size, warp
                                    parameters, mask method, hole_px and layered_px
    DIR/eval/...                    the same for held-out sources (at least 8 samples)
    DIR/train/P_00000000/0000_C.png clips (video configs): a folder per sample with frames
                                    0000, 0001, ... each _C, _M (and _I), at least 12 frames

``P`` is ``--export-prefix`` (default: ``io`` + a hash of the settings, so a resumed export
keeps it and exports of other settings — or iw3's own data — can share DIR). Stored samples
are ``--export-size`` square (default 512 where the cached frames allow it, never below
iw3's 256 px training crop); clips have ``--export-clip-len`` frames (default 16, iw3 takes
12). An export iw3 could not read is refused before any work unless ``force``.

The samples come from the same generator as training (CacheDataset → WarpCollate): the
dataset cuts a window ``data.crop_window`` times the stored size, the collate makes its masks
and keeps the crop with the most hole pixels (iw3's idea, vectorised), re-drawing warp
parameters up to ``collate.retries`` times for samples that still have too few. Training-time
augmentations are off (colour jitter, mask widening: iw3's trainer applies its own). Samples
are in right-view orientation (background right of each hole; ``view: left`` samples were
mirrored). Samples with fewer than ``collate.min_hole_px`` hole pixels (per frame) are
dropped; names are stream positions, so gaps in the numbering are dropped samples.

Sources that cannot give holes at the configured level are left out (``min_yield``, see
:class:`~.source_yield.SourceYield`): once its draws show that a source keeps too few of its
samples, its later draws are skipped before the warp (one warning line per source, listed in
``P.progress.json``). A small frame enlarged to the crop is the usual case:
enlarging spreads every depth step over as many pixels as it multiplies the shift, so a
source whose depth steps shift by less than a pixel at its own size has no holes at any
scale (docs/export.md). A split whose sources are all left out stops with an error instead
of drawing for ever.

Deterministic for a config (same bytes), and resumable: files are written atomically by a
thread pool (a sample's mask last; a clip assembled in ``DIR/.staging`` and renamed into
place whole, as iw3 lists every folder), the index is appended after each batch's files are
on disk, then the progress file is replaced. A killed export re-run with the same command
continues from the last committed batch; anything written after it is removed and rewritten
identically.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..cache import open_cache
from ..config import Config, ConfigError
from ..devices import resolve_device
from ..errors import show
from ..fsutil import atomic_write_bytes, sweep_temp, writable_dir
from ..stream import CacheDataset, mix_seed, split_records, training_stream
from .layout import (
    SPLITS,
    clear_staging,
    clear_uncommitted,
    finish_index,
    frame_files,
    load_json,
    sample_name,
    truncate_index,
    write_clip,
    write_sample,
)
from .plan import IW3_EVAL, ExportPlan, iw3_batch_note, plan_export
from .source_yield import SourceYield

__all__ = ["export_dataset", "ExportSummary"]

log = logging.getLogger("inpaint_online.export")


@dataclass
class ExportSummary:
    written: dict
    dropped: dict
    seconds: float
    plan: "ExportPlan | None" = None
    left_out: dict = field(default_factory=dict)   # split -> sources left out (too few holes)
    skipped: dict = field(default_factory=dict)    # split -> draws of left-out sources skipped

    @property
    def rate(self) -> float:
        return sum(self.written.values()) / max(self.seconds, 1e-9)

    def describe(self, out_dir) -> str:
        """The one-line report ``train_online.py --export-dir`` prints at the end."""
        drawn = sum(self.written.values()) + sum(self.dropped.values())
        dropped = sum(self.dropped.values())
        p = self.plan
        shape = f"{p.size}x{p.size}" + (f", clips of {p.clip_len} frames"
                                         if p.clip_len > 1 else "")
        left = ""
        if any(self.left_out.values()):
            left = (f"; {sum(map(len, self.left_out.values()))} source(s) left out for too few "
                    f"holes (warnings above), {sum(self.skipped.values())} of their draws skipped")
        return (f"exported {self.written['train']} train + {self.written['eval']} eval samples "
                f"({shape}, names {p.prefix}_NNNNNNNN) to {out_dir}; {dropped} of {drawn} drawn "
                f"({100 * dropped / max(drawn, 1):.1f}%) dropped with fewer than "
                f"collate.min_hole_px hole pixels; {self.seconds:.1f} s, {self.rate:.1f} "
                f"samples/s" + left + iw3_batch_note(p))


def export_dataset(cfg: Config, out_dir: str | Path, count: int, eval_count: int | None = None,
                   *, size: int | None = None, clip_len: int | None = None,
                   prefix: str | None = None, force: bool = False, threads: int = 8,
                   masked_input: bool = True, progress: bool = True,
                   min_yield: float = 0.25) -> ExportSummary:
    """Write ``count`` training and ``eval_count`` (default: :func:`~.plan.default_eval_count`) held-out
    samples in iw3's layout. ``min_yield``: leave out sources that keep fewer than this share
    of their samples (0: none). See the module docstring and :func:`plan_export`."""
    out = writable_dir(out_dir, "--export-dir", "export", create=False)   # created after the checks
    manifest = open_cache(cfg.data.cache_dir, cfg.data.rgb_from)
    records = manifest.samples()
    plan = plan_export(cfg, records, count, eval_count, size=size, clip_len=clip_len,
                       prefix=prefix, masked_input=masked_input, force=force,
                       min_yield=min_yield)
    ecfg = copy.deepcopy(cfg)
    ecfg.data.crop, ecfg.data.clip_len = plan.size, plan.clip_len
    train_recs, val_recs = split_records(records, cfg.data.val_fraction, cfg.data.val_sources)
    if plan.eval_count and not val_recs and not force:
        raise ConfigError(f"{show(cfg.data.cache_dir)}: no held-out sources for the eval split "
                          "(data.val_fraction is 0 or there is one source); iw3's trainer needs "
                          f"{IW3_EVAL} eval samples. Raise data.val_fraction or pass --export-force")
    # the datasets check the cache (clip runs long enough, frames big enough) before any write
    datasets = {split: CacheDataset(manifest, recs, ecfg.data, train=False)   # no colour jitter
                for split, recs, want in (("train", train_recs, plan.count),
                                          ("eval", val_recs, plan.eval_count)) if want and recs}
    writable_dir(out, "--export-dir", "export")
    sweep_temp(out)
    settings = plan.settings
    meta_path, progress_path = out / f"{plan.prefix}.export.json", out / f"{plan.prefix}.progress.json"
    old = load_json(meta_path)
    if old is not None and old != settings:
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        raise ConfigError(f"{show(out)}: holds an export {plan.prefix!r} made with other settings "
                          f"({', '.join(changed)} differ); use another --export-prefix (or none: "
                          "the default is derived from the settings) or the same config")
    if old is None:
        atomic_write_bytes(meta_path, json.dumps(settings, indent=1).encode())
    state = load_json(progress_path) or {}
    device = resolve_device(cfg.run.device, 0)
    targets = {"train": (train_recs, plan.count), "eval": (val_recs, plan.eval_count)}
    written, dropped, left_out, skipped = {}, {}, {}, {}
    staging = out / ".staging"
    clear_staging(staging, plan.prefix)
    t0 = time.perf_counter()
    from tqdm import tqdm
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for split in SPLITS:
            recs, want = targets[split]
            st = state.get(split, {"next_position": 0, "written": 0, "dropped": 0})
            if want > 0 and not recs:
                log.warning("%s: no sources for the %s split; none exported", show(out), split)
                want = 0
            split_dir = out / split
            split_dir.mkdir(exist_ok=True)
            index = split_dir / f"{plan.prefix}.index.jsonl"
            truncate_index(index, st["next_position"])
            clear_uncommitted(split_dir, plan.prefix, st["next_position"], cfg.data.batch_size)
            bar = tqdm(total=want, initial=min(st["written"], want), desc=f"export {split}",
                       unit="sample", disable=not progress, dynamic_ncols=True)
            if st["written"] < want:
                _export_split(ecfg, plan, datasets[split], split, split_dir, index, staging, want,
                              st, device, pool, masked_input, bar, lambda: atomic_write_bytes(
                                  progress_path, json.dumps(state, indent=1).encode()), state,
                              min_yield)
            bar.close()
            finish_index(index)
            written[split], dropped[split] = min(st["written"], want), st["dropped"]
            left_out[split] = sorted(st.get("left_out", {}))
            skipped[split] = st.get("skipped", 0)
    if staging.is_dir() and not any(staging.iterdir()):
        staging.rmdir()
    return ExportSummary(written, dropped, time.perf_counter() - t0, plan, left_out, skipped)


def _source_of(ds, index: int) -> dict:
    return ds.table[int(ds.starts[int(index)])]


def _subset(batch: dict, idx: list[int]) -> dict:
    """The items ``idx`` of a CPU batch (every per-item tensor)."""
    n = batch["rgb"].shape[0]
    sel = torch.tensor(idx, dtype=torch.long)
    return {k: v[sel] if torch.is_tensor(v) and v.dim() and v.shape[0] == n else v
            for k, v in batch.items()}


def _export_split(cfg, plan, ds, split, split_dir, index, staging, want, st, device,
                  pool, masked_input, bar, commit, state, min_yield) -> None:
    bs = cfg.data.batch_size
    # the default prefix names the settings (one export of them); a chosen one draws its own
    # samples: the same settings under a second name once wrote byte-identical copies
    seed = (mix_seed(cfg.run.seed, "export", split) if not plan.stream
            else mix_seed(cfg.run.seed, "export", split, plan.stream))
    first_batch = st["next_position"] // bs
    # the export reads every batch back to the host anyway: retries may skip finished samples
    loader, collate = training_stream(ds, cfg, device, seed=seed, start_batch=first_batch,
                                      augment=False, sync_ok=True)
    min_px = cfg.collate.min_hole_px
    st.setdefault("skipped", 0)
    # the table's source column (no record dict per sample: caches may hold millions)
    sources = {s.decode("utf-8", "surrogateescape") for s in np.unique(ds.table.source)}
    yld = SourceYield(st, min_yield, sources, split, cfg.warp.describe_divergence(), min_px)
    for k, full in enumerate(loader, start=first_batch):
        recs = [_source_of(ds, i) for i in full["index"].tolist()]
        take = [i for i in range(len(recs)) if not yld.skip(recs[i]["source"], k * bs)]
        row = {at: i for i, at in enumerate(take)}         # position in batch -> row of b
        if take:
            b = collate(full if len(take) == len(recs) else _subset(full, take), step=k)
            clip = b.y.dim() == 5
            y, mask = (b.y, b.mask) if clip else (b.y[:, None], b.mask[:, None])  # (B, T, ...)
            y = (y * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
            m = mask[:, :, 0].to(torch.uint8).mul(255).cpu().numpy()
            holes = mask.flatten(1).sum(1).long().tolist()
            layered = b.layered.long().tolist()
            boxes = b.meta["box"].tolist()
            t = y.shape[1]
            params = b.params.records()
        jobs, lines = [], []
        for at, rec in enumerate(recs):
            pos = k * bs + at
            if pos < st["next_position"]:
                continue                                   # committed before a restart
            if st["written"] >= want:
                break
            st["next_position"] = pos + 1
            if at not in row:
                st["skipped"] += 1                         # a left-out source: not warped
                continue
            i = row[at]
            kept = holes[i] >= min_px * t
            yld.record(rec, kept, pos)
            if not kept:
                st["dropped"] += 1
                continue
            name = sample_name(plan.prefix, pos)
            frames = [frame_files(y[i, j], m[i, j], masked_input) for j in range(t)]
            if clip:
                # iw3 lists every folder of the split: a clip is assembled in .staging and
                # renamed into place whole, so a reader never sees half of one
                jobs.append(pool.submit(write_clip, staging / name, split_dir / name, frames))
            else:
                jobs.append(pool.submit(write_sample, split_dir, name, frames[0]))
            lines.append(json.dumps({
                "name": name, "position": pos, "split": split, "source": rec["source"],
                "rel": rec["rel"], "kind": rec["kind"],
                ("frames" if clip else "frame"): b.meta["frames"][i].tolist() if clip else rec["frame"],
                "box": [round(v, 3) for v in boxes[i]], "size": plan.size,
                "flip": bool(b.meta["flip"][i]), "hole_px": holes[i],
                "layered_px": layered[i], "method": cfg.collate.method, "orientation": "right",
                **params[i]}))
            st["written"] += 1
            bar.update(1)
        for j in jobs:
            j.result()                                     # files on disk before the index
        if lines:
            with open(index, "a", encoding="utf-8") as f:
                f.write("".join(x + "\n" for x in lines))
        state[split] = st
        commit()
        if st["written"] >= want:
            return



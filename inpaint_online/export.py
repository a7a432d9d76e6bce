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
:class:`_Yield`): once its draws show that a source keeps too few of its samples, its later
draws are skipped before the warp (one warning line per source, listed in
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
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .cache import open_cache
from .config import Config, ConfigError
from .devices import resolve_device
from .errors import DataError, show
from .fsutil import atomic_write_bytes, sweep_temp, writable_dir
from .stream import CacheDataset, mix_seed, split_records, training_stream

__all__ = ["export_dataset", "plan_export", "read_sample", "ExportSummary", "ExportPlan",
           "IW3_SIZE", "IW3_CLIP", "IW3_EVAL"]

log = logging.getLogger(__name__)

SPLITS = ("train", "eval")


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


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)   # ~3x faster than 6
    return buf.getvalue()


def read_sample(split_dir: str | Path, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, mask, y)`` float tensors ``(3|1, H, W)`` in [0, 1] of an exported sample; for a
    clip (a folder ``name/``) ``(T, 3|1, H, W)``."""
    d = Path(split_dir)
    if (d / name).is_dir():
        frames = sorted(p.name[:-6] for p in (d / name).glob("*_C.png"))
        parts = [read_sample(d / name, f) for f in frames]
        return tuple(torch.stack(v) for v in zip(*parts))
    y = torch.from_numpy(np.array(Image.open(d / f"{name}_C.png").convert("RGB"))).permute(2, 0, 1)
    m = torch.from_numpy(np.array(Image.open(d / f"{name}_M.png")))[None]
    y = y.float() / 255
    mask = (m > 0).float()
    return y * (1 - mask), mask, y


IW3_SIZE = 256           # iw3's training crop: every stored sample must be at least this
IW3_CLIP = 12            # frames iw3's video trainer takes from a clip folder
IW3_EVAL = 8             # its eval batch size (drop_last): fewer samples give no batch at all
DEFAULT_CLIP = 16        # what iw3's own video generator writes
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")


@dataclass
class ExportPlan:
    """What an export writes, resolved and checked before any work."""
    size: int              # stored side (the crop of the exported samples)
    clip_len: int          # frames per clip (1 for images)
    prefix: str            # sample names: PREFIX_00000012 (_C.png, _M.png, ...)
    count: int
    eval_count: int
    settings: dict = field(default_factory=dict)   # what decides the bytes (P.export.json)


def default_size(records: list[dict], cfg: Config) -> int:
    """512 where the cached frames allow it at the configured scale (median short side times
    the largest scale), never below iw3's 256; a multiple of 8."""
    sides = sorted(min(r["depth_size"]) for r in records if r.get("depth_size"))
    if not sides:
        return 512
    allowed = sides[len(sides) // 2] * cfg.data.scale_range[1]
    return int(min(512, max(IW3_SIZE, allowed)) // 8 * 8)


def plan_export(cfg: Config, records: list[dict], count: int, eval_count: int | None, *,
                size: int | None = None, clip_len: int | None = None, prefix: str | None = None,
                masked_input: bool = True, force: bool = False,
                min_yield: float = 0.25) -> ExportPlan:
    """Resolve the export's size, clip length, counts and name prefix, and refuse (unless
    ``force``) an export iw3's inpainting trainer could not read, saying why and the fix."""
    if count < 0 or (eval_count is not None and eval_count < 0):
        raise ConfigError("--export-count and --export-eval-count must be >= 0")
    video = cfg.data.clip_len > 1
    plan = ExportPlan(
        size=size if size is not None else default_size(records, cfg),
        clip_len=(clip_len if clip_len is not None else DEFAULT_CLIP) if video else 1,
        prefix="", count=count,
        eval_count=max(IW3_EVAL, count // 10) if eval_count is None else eval_count)
    if not video and clip_len not in (None, 1):
        raise ConfigError("--export-clip-len is for video configs (data.clip_len > 1)")
    if plan.size < 16 or plan.clip_len < 1:
        raise ConfigError("--export-size must be >= 16 and --export-clip-len >= 1")
    if not 0 <= min_yield < 1:
        raise ConfigError(f"--export-min-yield {min_yield}: use a share in [0, 1) (0: keep every source)")
    why = []
    if plan.size < IW3_SIZE:
        why.append(f"--export-size {plan.size} is below the {IW3_SIZE} px iw3's trainer crops "
                   f"from every sample (use --export-size {IW3_SIZE} or more)")
    if video and plan.clip_len < IW3_CLIP:
        why.append(f"--export-clip-len {plan.clip_len} is below the {IW3_CLIP} frames iw3's video "
                   f"trainer takes from a clip (use {IW3_CLIP} or more; cache clips that long "
                   "with precompute_depth.py --clip-len)")
    if plan.eval_count < IW3_EVAL:
        why.append(f"--export-eval-count {plan.eval_count} is below iw3's eval batch of "
                   f"{IW3_EVAL} (fewer samples give it no eval batch at all)")
    if why and not force:
        raise ConfigError("this export could not be read by iw3's inpainting trainer: "
                          + "; ".join(why) + ". Pass --export-force to write it anyway "
                          "(for other readers)")
    plan.settings = _settings(cfg, masked_input, plan, min_yield)
    if prefix is None:
        digest = hashlib.blake2b(json.dumps(plan.settings, sort_keys=True).encode(), digest_size=4)
        prefix = "io" + digest.hexdigest()
    if not _PREFIX.match(prefix):
        raise ConfigError(f"--export-prefix {prefix!r}: use 1-32 letters, digits and '-' "
                          "(no '_': it separates the prefix from the number)")
    plan.prefix = prefix
    return plan


def _settings(cfg: Config, masked_input: bool, plan: ExportPlan, min_yield: float) -> dict:
    c = cfg.to_dict()
    # what decides the samples' bytes; run/optim/train/model/loss do not (run.seed does)
    return {"format": "inpaint_online.export/3", "seed": cfg.run.seed, "data": c["data"],
            "warp": c["warp"], "collate": c["collate"], "masked_input": masked_input,
            "size": plan.size, "clip_len": plan.clip_len, "min_yield": min_yield}


def _load_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: unreadable ({e}); delete it to start the export over") from None


def _truncate_index(path: Path, next_position: int) -> None:
    """Drop index lines of uncommitted batches (and torn lines) after a kill."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("position", 1 << 62) < next_position:
            keep.append(line)
    atomic_write_bytes(path, "".join(x + "\n" for x in keep).encode())


def export_dataset(cfg: Config, out_dir: str | Path, count: int, eval_count: int | None = None,
                   *, size: int | None = None, clip_len: int | None = None,
                   prefix: str | None = None, force: bool = False, threads: int = 8,
                   masked_input: bool = True, progress: bool = True,
                   min_yield: float = 0.25) -> ExportSummary:
    """Write ``count`` training and ``eval_count`` (default: ``max(8, count // 10)``) held-out
    samples in iw3's layout. ``min_yield``: leave out sources that keep fewer than this share
    of their samples (0: none). See the module docstring and :func:`plan_export`."""
    out = writable_dir(out_dir, "--export-dir", "export", create=False)   # created after the checks
    manifest = open_cache(cfg.data.cache_dir)
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
    old = _load_json(meta_path)
    if old is not None and old != settings:
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        raise ConfigError(f"{show(out)}: holds an export {plan.prefix!r} made with other settings "
                          f"({', '.join(changed)} differ); use another --export-prefix (or none: "
                          "the default is derived from the settings) or the same config")
    if old is None:
        atomic_write_bytes(meta_path, json.dumps(settings, indent=1).encode())
    state = _load_json(progress_path) or {}
    device = resolve_device(cfg.run.device, 0)
    targets = {"train": (train_recs, plan.count), "eval": (val_recs, plan.eval_count)}
    written, dropped, left_out, skipped = {}, {}, {}, {}
    staging = out / ".staging"
    _clear_staging(staging, plan.prefix)
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
            _truncate_index(index, st["next_position"])
            _clear_uncommitted(split_dir, plan.prefix, st["next_position"], cfg.data.batch_size)
            bar = tqdm(total=want, initial=min(st["written"], want), desc=f"export {split}",
                       unit="sample", disable=not progress, dynamic_ncols=True)
            if st["written"] < want:
                _export_split(ecfg, plan, datasets[split], split, split_dir, index, staging, want,
                              st, device, pool, masked_input, bar, lambda: atomic_write_bytes(
                                  progress_path, json.dumps(state, indent=1).encode()), state,
                              min_yield)
            bar.close()
            _finish_index(index)
            written[split], dropped[split] = min(st["written"], want), st["dropped"]
            left_out[split] = sorted(st.get("left_out", {}))
            skipped[split] = st.get("skipped", 0)
    if staging.is_dir() and not any(staging.iterdir()):
        staging.rmdir()
    return ExportSummary(written, dropped, time.perf_counter() - t0, plan, left_out, skipped)


def _name(prefix: str, pos: int) -> str:
    return f"{prefix}_{pos:08d}"


def _source_of(ds, index: int) -> dict:
    return ds.table[int(ds.starts[int(index)])]


def _subset(batch: dict, idx: list[int]) -> dict:
    """The items ``idx`` of a CPU batch (every per-item tensor)."""
    n = batch["rgb"].shape[0]
    sel = torch.tensor(idx, dtype=torch.long)
    return {k: v[sel] if torch.is_tensor(v) and v.dim() and v.shape[0] == n else v
            for k, v in batch.items()}


class _Yield:
    """Which sources an export leaves out for giving too few holes (``min_yield`` = Y).

    From its first dropped sample on, a source's draws go through a sequential probability
    ratio test of "keeps Y/2 of its samples" against "keeps 2Y" (Wald): each drop adds
    log((1-Y/2)/(1-2Y)), each kept sample log((Y/2)/(2Y)). At log 20 the source is left out
    from the next batch on (``left_out``: source -> the position that decided it); at
    -log 20 it has proven itself and is not tested again. At Y = 0.25 (simulated): a source
    that keeps none is left out after 6 drops in a row, one that keeps 1 in 8 is kept 1 time
    in 60, one that keeps half is left out 1 time in 16, 80 %: 1 in 1,700. The ledger lives
    in the split's progress state, so a resumed export decides the same."""

    BOUND = math.log(20)

    def __init__(self, st: dict, min_yield: float, sources: set, split: str, level, min_px: int):
        self.ledger = st.setdefault("at_risk", {})      # source -> [dropped, kept, llr] or "ok"
        self.out = st.setdefault("left_out", {})
        self.min_yield, self.sources, self.split = min_yield, sources, split
        self.level, self.min_px = level, min_px
        bad, good = min_yield / 2, min(2 * min_yield, 0.99)
        self.w_drop = math.log((1 - bad) / (1 - good)) if min_yield > 0 else 0.0
        self.w_kept = math.log(bad / good) if min_yield > 0 else 0.0
        self.check()

    def skip(self, source: str, batch_start: int) -> bool:
        """Left out before this batch (decisions take effect at batch boundaries, so a
        resumed batch is filtered as the uninterrupted one was)."""
        return self.out.get(source, 1 << 62) <= batch_start

    def record(self, rec: dict, kept: bool, pos: int) -> None:
        src = rec["source"]
        if self.min_yield <= 0 or src in self.out:
            return
        e = self.ledger.get(src)
        if e == "ok" or (e is None and kept):
            return
        e = e or [0, 0, 0.0]
        e[1 if kept else 0] += 1
        e[2] += self.w_kept if kept else self.w_drop
        self.ledger[src] = e
        if e[2] <= -self.BOUND:
            self.ledger[src] = "ok"
        elif e[2] >= self.BOUND:
            self.out[src] = pos + 1
            size = rec.get("depth_size")
            frames = f" (cached frames {size[0]}x{size[1]})" if size else ""
            log.warning("%s: left out of the %s export: %d of its %d samples since its first drop "
                        "had >= %d hole px per frame at %s%s; a higher warp level, "
                        "larger frames or a lower --export-min-yield keep it", show(src),
                        self.split, e[1], e[0] + e[1], self.min_px, self.level, frames)
            self.check()

    def check(self) -> None:
        if self.sources and self.sources <= set(self.out):
            raise DataError(
                f"export {self.split}: every source was left out: too few of their samples had "
                f">= {self.min_px} hole px per frame at {self.level} (--export-min-yield "
                f"{self.min_yield:g}); use a higher warp.level, a lower collate.min_hole_px or "
                "--export-min-yield 0")


def _export_split(cfg, plan, ds, split, split_dir, index, staging, want, st, device,
                  pool, masked_input, bar, commit, state, min_yield) -> None:
    bs = cfg.data.batch_size
    seed = mix_seed(cfg.run.seed, "export", split)
    first_batch = st["next_position"] // bs
    # the export reads every batch back to the host anyway: retries may skip finished samples
    loader, collate = training_stream(ds, cfg, device, seed=seed, start_batch=first_batch,
                                      augment=False, sync_ok=True)
    min_px = cfg.collate.min_hole_px
    st.setdefault("skipped", 0)
    # the table's source column (no record dict per sample: caches may hold millions)
    sources = {s.decode("utf-8", "surrogateescape") for s in np.unique(ds.table.source)}
    yld = _Yield(st, min_yield, sources, split, cfg.warp.describe_divergence(), min_px)
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
            name = _name(plan.prefix, pos)
            frames = [_frame_files(y[i, j], m[i, j], masked_input) for j in range(t)]
            if clip:
                # iw3 lists every folder of the split: a clip is assembled in .staging and
                # renamed into place whole, so a reader never sees half of one
                jobs.append(pool.submit(_write_clip, staging / name, split_dir / name, frames))
            else:
                jobs.append(pool.submit(_write_sample, split_dir, name, frames[0]))
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


def _frame_files(y: np.ndarray, m: np.ndarray, masked_input: bool) -> list[tuple[str, np.ndarray]]:
    """One frame's files in write order: the mask last (iw3 pairs every _M with its _C)."""
    files = [("_C.png", y)]
    if masked_input:
        files.append(("_I.png", np.where(m[..., None] > 0, 0, y).astype(np.uint8)))
    files.append(("_M.png", m))
    return files


def _write_sample(split_dir: Path, name: str, files) -> None:
    for suffix, arr in files:
        atomic_write_bytes(split_dir / (name + suffix), _png(arr))


def _write_clip(tmp: Path, final: Path, frames) -> None:
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for j, files in enumerate(frames):
        for suffix, arr in files:
            atomic_write_bytes(tmp / f"{j:04d}{suffix}", _png(arr))
    if final.exists():                                     # rewritten after a kill
        shutil.rmtree(final)
    os.rename(tmp, final)


def _clear_staging(staging: Path, prefix: str) -> None:
    """Clips a killed export was assembling (this export's only)."""
    if staging.is_dir():
        for d in staging.glob(f"{prefix}_*"):
            shutil.rmtree(d, ignore_errors=True)


def _clear_uncommitted(split_dir: Path, prefix: str, next_position: int, batch_size: int) -> None:
    """After a kill: remove what the uncommitted batch left (temp files, finished files of
    samples the index does not list yet); a resumed export writes them again, identically."""
    sweep_temp(split_dir)
    for pos in range(next_position, next_position + batch_size):
        name = _name(prefix, pos)
        if (split_dir / name).is_dir():
            shutil.rmtree(split_dir / name)
        for suffix in ("_C.png", "_M.png", "_I.png"):
            (split_dir / (name + suffix)).unlink(missing_ok=True)


def _finish_index(path: Path) -> None:
    """Sorted by position, one line per sample: the same bytes however often it was resumed."""
    if not path.exists():
        atomic_write_bytes(path, b"")
        return
    recs = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        recs[r["position"]] = line
    atomic_write_bytes(path, "".join(recs[p] + "\n" for p in sorted(recs)).encode())

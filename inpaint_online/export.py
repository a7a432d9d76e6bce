"""``--export-dir``: materialise the streaming stage as a fixed dataset in iw3's layout.

    DIR/export.json                settings (config, counts); a re-run must match them
    DIR/progress.json              per split: next stream position, written, dropped
    DIR/train/00000000_C.png       target crop (RGB)           ← iw3's inpaint trainer reads
    DIR/train/00000000_M.png       hole mask (L, 0 / 255)      ← these two
    DIR/train/00000000_I.png       masked input C·(1−M) (unless masked_input=False)
    DIR/train/index.jsonl          one line per sample: source, frame, crop, warp parameters,
                                   mask method, hole_px and layered_px (iw3's layered holes)
    DIR/eval/...                   the same for held-out sources
    DIR/train/00000000/0000_C.png  clips (data.clip_len > 1): one folder per sample, frames
                                   0000, 0001, ... each with _C, _M (and _I), as iw3's video data

The samples come from the same generator as training (CacheDataset → WarpCollate) with its
training-time augmentations off (colour jitter, mask widening: a trainer reading a fixed
dataset applies its own). Samples are in right-view orientation (background right of each
hole; ``view: left`` samples were mirrored). Samples with fewer than ``collate.min_hole_px``
hole pixels are dropped, as iw3 does; names are stream positions, so gaps in the numbering
are dropped samples.

Deterministic for a config (same bytes), and resumable: files are written atomically by a
thread pool, the index is appended after each batch's files are on disk, then
``progress.json`` is replaced. A killed export re-run with the same command continues from the
last committed batch; anything written after it is rewritten identically.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .fsutil import atomic_write_bytes, show, sweep_temp
from .collate import WarpCollate
from .config import Config, ConfigError
from .data import CacheDataset, StreamSampler, make_loader, mix_seed, open_cache, split_records
from .train import _device

__all__ = ["export_dataset", "read_sample", "ExportSummary"]

log = logging.getLogger(__name__)

SPLITS = ("train", "eval")


@dataclass
class ExportSummary:
    written: dict
    dropped: dict
    seconds: float

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


def _settings(cfg: Config, masked_input: bool) -> dict:
    c = cfg.to_dict()
    # what decides the samples' bytes; run/optim/train/model/loss do not (run.seed does)
    return {"format": "inpaint_online.export/1", "seed": cfg.run.seed, "data": c["data"],
            "warp": c["warp"], "collate": c["collate"], "masked_input": masked_input}


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
                   *, threads: int = 8, masked_input: bool = True,
                   progress: bool = True) -> ExportSummary:
    if count < 0 or (eval_count is not None and eval_count < 0):
        raise ConfigError("--export-count and --export-eval-count must be >= 0")
    eval_count = max(1, count // 10) if eval_count is None else eval_count
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{show(out)}: --export-dir is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{show(out)}: cannot create the export folder ({e.strerror or e})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"{show(out)}: the export folder is not writable")
    sweep_temp(out)
    settings = _settings(cfg, masked_input)
    old = _load_json(out / "export.json")
    if old is not None and old != settings:
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        raise ConfigError(f"{out}: holds an export made with other settings ({', '.join(changed)} "
                          "differ); use a new --export-dir or the same config")
    if old is None:
        atomic_write_bytes(out / "export.json", json.dumps(settings, indent=1).encode())
    state = _load_json(out / "progress.json") or {}
    manifest = open_cache(cfg.data.cache_dir)
    train_recs, val_recs = split_records(manifest.samples(), cfg.data.val_fraction)
    device = _device(cfg.run.device, 0)
    targets = {"train": (train_recs, count), "eval": (val_recs, eval_count)}
    written, dropped = {}, {}
    t0 = time.perf_counter()
    from tqdm import tqdm
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for split in SPLITS:
            recs, want = targets[split]
            st = state.get(split, {"next_position": 0, "written": 0, "dropped": 0})
            if want > 0 and not recs:
                log.warning("%s: no sources for the %s split; none exported", out, split)
                want = 0
            split_dir = out / split
            split_dir.mkdir(exist_ok=True)
            _truncate_index(split_dir / "index.jsonl", st["next_position"])
            _clear_uncommitted(split_dir, st["next_position"], cfg.data.batch_size)
            bar = tqdm(total=want, initial=min(st["written"], want), desc=f"export {split}",
                       unit="sample", disable=not progress, dynamic_ncols=True)
            if st["written"] < want:
                _export_split(cfg, manifest, recs, split, split_dir, want, st, device, pool,
                              masked_input, bar, lambda: atomic_write_bytes(
                                  out / "progress.json", json.dumps(state, indent=1).encode()), state)
            bar.close()
            _finish_index(split_dir / "index.jsonl")
            written[split], dropped[split] = min(st["written"], want), st["dropped"]
    return ExportSummary(written, dropped, time.perf_counter() - t0)


def _export_split(cfg, manifest, recs, split, split_dir, want, st, device, pool, masked_input,
                  bar, commit, state) -> None:
    bs = cfg.data.batch_size
    seed = mix_seed(cfg.run.seed, "export", split)
    ds = CacheDataset(manifest, recs, cfg.data, train=False)            # no colour jitter
    first_batch = st["next_position"] // bs
    sampler = StreamSampler(len(ds), seed=seed, start=first_batch * bs)
    loader = make_loader(ds, sampler)
    collate = WarpCollate(cfg.warp, cfg.collate, device=device, seed=seed, augment=False)
    min_px = cfg.collate.min_hole_px
    for k, cpu in enumerate(loader, start=first_batch):
        b = collate(cpu, step=k)
        clip = b.y.dim() == 5
        y, mask = (b.y, b.mask) if clip else (b.y[:, None], b.mask[:, None])    # (B, T, ...)
        y = (y * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
        m = mask[:, :, 0].to(torch.uint8).mul(255).cpu().numpy()
        holes = mask.flatten(1).sum(1).long().tolist()
        layered = b.layered.long().tolist()
        t = y.shape[1]
        params = b.params.records()
        jobs, lines = [], []
        for i in range(len(b)):
            pos = k * bs + i
            if pos < st["next_position"]:
                continue                                   # committed before a restart
            if st["written"] >= want:
                break
            st["next_position"] = pos + 1
            if holes[i] < min_px * t:
                st["dropped"] += 1
                continue
            name = f"{pos:08d}"
            # images: NAME_C.png ...; clips: NAME/0000_C.png ... (iw3's video layout)
            stems = [f"{name}/{j:04d}" for j in range(t)] if clip else [name]
            if clip:
                (split_dir / name).mkdir(exist_ok=True)
            for j, stem in enumerate(stems):
                files = [(f"{stem}_C.png", y[i, j]), (f"{stem}_M.png", m[i, j])]
                if masked_input:
                    files.append((f"{stem}_I.png",
                                  np.where(m[i, j][..., None] > 0, 0, y[i, j]).astype(np.uint8)))
                for fname, arr in files:
                    jobs.append(pool.submit(lambda p=split_dir / fname, a=arr: atomic_write_bytes(p, _png(a))))
            rec = ds.table[int(ds.starts[int(b.meta["index"][i])])]
            frames = b.meta["frames"][i].tolist() if clip else rec["frame"]
            lines.append(json.dumps({
                "name": name, "position": pos, "split": split, "source": rec["source"],
                "rel": rec["rel"], "kind": rec["kind"], ("frames" if clip else "frame"): frames,
                "box": [round(v, 3) for v in b.meta["box"][i].tolist()],
                "flip": bool(b.meta["flip"][i]), "hole_px": holes[i],
                "layered_px": layered[i], "method": cfg.collate.method, "orientation": "right",
                **params[i]}))
            st["written"] += 1
            bar.update(1)
        for j in jobs:
            j.result()                                     # files on disk before the index
        if lines:
            with open(split_dir / "index.jsonl", "a", encoding="utf-8") as f:
                f.write("".join(x + "\n" for x in lines))
        state[split] = st
        commit()
        if st["written"] >= want:
            return


def _clear_uncommitted(split_dir: Path, next_position: int, batch_size: int) -> None:
    """After a kill: remove what the uncommitted batch left (temp files, finished files of
    samples the index does not list yet); a resumed export writes them again, identically."""
    sweep_temp(split_dir)
    for pos in range(next_position, next_position + batch_size):
        name = f"{pos:08d}"
        folder = split_dir / name
        if folder.is_dir():
            for f in folder.iterdir():
                f.unlink(missing_ok=True)
            folder.rmdir()
        for suffix in ("_C.png", "_M.png", "_I.png"):
            (split_dir / (name + suffix)).unlink(missing_ok=True)


def _finish_index(path: Path) -> None:
    """Sorted by position, one line per sample: the same bytes however often it was resumed."""
    if not path.exists():
        path.write_text("")
        return
    recs = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        recs[r["position"]] = line
    atomic_write_bytes(path, "".join(recs[p] + "\n" for p in sorted(recs)).encode())

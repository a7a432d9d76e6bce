"""iw3's on-disk layout of inpainting datasets, as this project writes and reads it
(docs/export.md): sample names, the files of a frame, atomic sample and clip writes, the
index, and the clean-up after a killed export."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import ConfigError
from ..fsutil import atomic_write_bytes, sweep_temp

__all__ = ["SPLITS", "png_bytes", "read_sample", "sample_name", "frame_files", "write_sample",
           "write_clip", "clear_staging", "clear_uncommitted", "finish_index", "truncate_index",
           "load_json"]

SPLITS = ("train", "eval")


def png_bytes(array: np.ndarray) -> bytes:
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


def sample_name(prefix: str, pos: int) -> str:
    return f"{prefix}_{pos:08d}"


def load_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: unreadable ({e}); delete it to start the export over") from None


def truncate_index(path: Path, next_position: int) -> None:
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


def frame_files(y: np.ndarray, m: np.ndarray, masked_input: bool) -> list[tuple[str, np.ndarray]]:
    """One frame's files in write order: the mask last (iw3 pairs every _M with its _C)."""
    files = [("_C.png", y)]
    if masked_input:
        files.append(("_I.png", np.where(m[..., None] > 0, 0, y).astype(np.uint8)))
    files.append(("_M.png", m))
    return files


def write_sample(split_dir: Path, name: str, files) -> None:
    for suffix, arr in files:
        atomic_write_bytes(split_dir / (name + suffix), png_bytes(arr))


def write_clip(tmp: Path, final: Path, frames) -> None:
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for j, files in enumerate(frames):
        for suffix, arr in files:
            atomic_write_bytes(tmp / f"{j:04d}{suffix}", png_bytes(arr))
    if final.exists():                                     # rewritten after a kill
        shutil.rmtree(final)
    os.rename(tmp, final)


def clear_staging(staging: Path, prefix: str) -> None:
    """Clips a killed export was assembling (this export's only)."""
    if staging.is_dir():
        for d in staging.glob(f"{prefix}_*"):
            shutil.rmtree(d, ignore_errors=True)


def clear_uncommitted(split_dir: Path, prefix: str, next_position: int, batch_size: int) -> None:
    """After a kill: remove what the uncommitted batch left (temp files, finished files of
    samples the index does not list yet); a resumed export writes them again, identically."""
    sweep_temp(split_dir)
    for pos in range(next_position, next_position + batch_size):
        name = sample_name(prefix, pos)
        if (split_dir / name).is_dir():
            shutil.rmtree(split_dir / name)
        for suffix in ("_C.png", "_M.png", "_I.png"):
            (split_dir / (name + suffix)).unlink(missing_ok=True)


def finish_index(path: Path) -> None:
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

"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain values only (no pickled classes), so loading
one never runs code from the file. It carries the model's config, so a checkpoint of
another architecture or size is refused with a message saying what differs.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from .cache import atomic_write_bytes

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError", "FORMAT"]

FORMAT = "inpaint_online.checkpoint/1"


class CheckpointError(Exception):
    pass


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Serialise to memory, then temp file + fsync + ``os.replace``: a kill mid-write
    leaves the previous checkpoint intact."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(path: str | os.PathLike, *, expect_model: dict | None = None,
                    map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]})") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an inpaint_online checkpoint "
                              f"(format {ck.get('format') if isinstance(ck, dict) else type(ck).__name__!r})")
    if expect_model is not None and ck["model_config"] != expect_model:
        diff = sorted(k for k in set(expect_model) | set(ck["model_config"])
                      if expect_model.get(k) != ck["model_config"].get(k))
        raise CheckpointError(
            f"{path}: checkpoint is for another model: " + ", ".join(
                f"model.{k} = {ck['model_config'].get(k)!r} in the checkpoint, "
                f"{expect_model.get(k)!r} in the config" for k in diff))
    return ck

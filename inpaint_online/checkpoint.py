"""Checkpoints: written atomically, verified, read with ``torch.load(weights_only=True)``.

Integrity: a checkpoint is a zip archive whose members carry CRC-32s (torch writes them);
every load checks all of them first, so a file damaged after it was written (flipped bytes,
a truncated copy) is refused with a message instead of loading wrong weights silently.

A checkpoint is a dict of tensors and plain values only (no pickled classes), so loading
one never runs code from the file. It carries the model's config, so a checkpoint of
another architecture or size is refused with a message saying what differs.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import torch

from .errors import one_line, show
from .fsutil import atomic_write_bytes

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint", "verify_checkpoint",
           "CheckpointError", "FORMAT"]

FORMAT = "inpaint_online.checkpoint/1"


class CheckpointError(Exception):
    pass


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Serialise to memory, then temp file + fsync + ``os.replace``: a kill mid-write
    leaves the previous checkpoint intact."""
    buf = io.BytesIO()
    ser = torch.serialization
    crc_was = ser.get_crc32_options() if hasattr(ser, "get_crc32_options") else True
    if not crc_was:
        ser.set_crc32_options(True)        # load_checkpoint verifies them
    try:
        torch.save({"format": FORMAT, **state}, buf)
    finally:
        if not crc_was:
            ser.set_crc32_options(False)
    atomic_write_bytes(Path(path), buf.getvalue())


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a complete zip archive whose every
    member matches its CRC-32."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{show(path)}: no such checkpoint")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{show(path)}: empty file (0 bytes), not a checkpoint")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise CheckpointError(f"{show(path)}: not a readable checkpoint (damaged, truncated or "
                              f"another format: {one_line(e) or type(e).__name__})") from None
    if bad is not None:
        raise CheckpointError(f"{show(path)}: damaged checkpoint: {bad} fails its CRC-32 check "
                              "(the file changed after it was written); use another copy")


def read_checkpoint(path: str | os.PathLike, map_location="cpu"):
    """A verified checkpoint file's contents (``weights_only``), whatever its format: an
    inpaint_online checkpoint or a nunif model file (:mod:`inpaint_online.iw3net`)."""
    path = Path(path)
    verify_checkpoint(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise CheckpointError(f"{show(path)}: not a readable checkpoint "
                                  f"({one_line(e)[:200]})") from None
        # torch's own text goes on to suggest weights_only=False: that would run the code
        raise CheckpointError(f"{show(path)}: refused as unsafe: it holds pickled Python objects "
                              "that would run code when loaded, not only weights and plain "
                              "values") from None
    except Exception as e:  # torch raises several types for truncated / foreign files
        raise CheckpointError(f"{show(path)}: not a readable checkpoint ({type(e).__name__}: "
                              f"{one_line(e)[:200]})") from None


def load_checkpoint(path: str | os.PathLike, *, expect_model: dict | None = None,
                    map_location="cpu", data=None) -> dict:
    """An inpaint_online checkpoint, checked (format, model config). ``data``: the file's
    contents when :func:`read_checkpoint` has read them already (not read twice)."""
    path = Path(path)
    ck = read_checkpoint(path, map_location) if data is None else data
    if isinstance(ck, dict) and "nunif_model" in ck:
        raise CheckpointError(f"{show(path)}: a nunif model file ({ck.get('name')}), not a "
                              "training checkpoint: stereo/inpaint/compare take it as it is, "
                              "training starts from it with train.init_from, --resume needs last.pt")
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"{show(path)}: not an inpaint_online checkpoint "
                              f"(format {ck.get('format') if isinstance(ck, dict) else type(ck).__name__!r})")
    if isinstance(ck.get("model_config"), dict):
        # made before model.prefill_smooth existed: their first guess smoothed 8 times
        ck["model_config"].setdefault("prefill_smooth", 8)
    if expect_model is not None and ck["model_config"] != expect_model:
        diff = sorted(k for k in set(expect_model) | set(ck["model_config"])
                      if expect_model.get(k) != ck["model_config"].get(k))
        raise CheckpointError(
            f"{show(path)}: checkpoint is for another model: " + ", ".join(
                f"model.{k} = {ck['model_config'].get(k)!r} in the checkpoint, "
                f"{expect_model.get(k)!r} in the config" for k in diff))
    return ck

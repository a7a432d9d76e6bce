"""Depth or disparity maps that already exist (``--backend import``), and the map readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import one_line, show
from ..media import MediaError
from .base import DepthBackend, DepthRequest, DepthSetupError


class ImportBackend(DepthBackend):
    """Depth or disparity maps that already exist, in a folder mirroring the inputs:
    ``DIR/<rel path without extension>.{png,npy,pfm}`` for images and
    ``DIR/<rel path without extension>/<frame:06d>.{png,npy,pfm}`` for video frames.
    ``kind="depth"`` maps (larger = farther) are inverted; ``"disparity"`` maps are used as
    they are. Non-finite and non-positive depth counts as far."""

    name = "import"
    EXTS = (".npy", ".png", ".pfm")

    def __init__(self, root: str, kind: str = "disparity"):
        if kind not in ("depth", "disparity"):
            raise DepthSetupError(f"import kind must be 'depth' or 'disparity', got {kind!r}")
        self.root, self.kind = Path(root), kind
        if not self.root.is_dir():
            raise DepthSetupError(f"--import-dir {root}: no such directory")

    def settings(self) -> dict:
        return {"root": str(self.root.resolve()), "kind": self.kind}

    def _path(self, request: DepthRequest, frame: int, video: bool) -> Path:
        stem = Path(request.rel).with_suffix("")
        base = self.root / stem / f"{frame:06d}" if video else self.root / stem
        for ext in self.EXTS:
            p = base.with_name(base.name + ext)
            if p.is_file():
                return p
        raise MediaError(f"{request.source}: no imported depth map at {base}.{{npy,png,pfm}}")

    def prepare(self, frames: np.ndarray, request: DepthRequest):
        """Reads the maps (all the work there is: it runs in the workers)."""
        from ..media import media_kind
        video = media_kind(request.source) == "video"
        out = []
        for frame in request.frames:
            p = self._path(request, frame, video)
            m = read_map(p).astype(np.float64)
            if m.shape != frames.shape[1:3]:
                raise MediaError(f"{show(p)}: map is {m.shape[1]}x{m.shape[0]} but the image is "
                                 f"{frames.shape[2]}x{frames.shape[1]}")
            try:
                out.append(to_inverse_depth(m, self.kind))
            except ValueError as e:
                raise MediaError(f"{show(p)}: {e}") from None
        x = np.stack(out).astype(np.float32)
        return ("import", *x.shape[1:]), x

    def infer(self, x: torch.Tensor, key) -> np.ndarray:
        return x.numpy()


def to_inverse_depth(m: np.ndarray, kind: str) -> np.ndarray:
    """A raw map as float32 inverse depth (larger = nearer), not yet normalised.

    ``kind="depth"`` (larger = farther) is inverted; ``"disparity"`` is used as it is.
    Non-finite values (and non-positive depth) count as the farthest value present; a map
    with no usable value at all is a ValueError."""
    m = np.asarray(m, dtype=np.float64)
    usable = np.isfinite(m) & (m > 0) if kind == "depth" else np.isfinite(m)
    if kind in ("depth", "disparity") and not usable.any():
        raise ValueError("the map has no usable value (all NaN/inf"
                         f"{' or <= 0' if kind == 'depth' else ''})")
    if kind == "depth":
        ok = np.isfinite(m) & (m > 0)
        inv = np.where(ok, 1.0 / np.where(ok, m, 1.0), np.nan)
        m = np.where(ok, inv, np.nanmin(inv) if ok.any() else 0.0)
    elif kind == "disparity":
        fin = np.isfinite(m)
        m = np.where(fin, m, np.nanmin(np.where(fin, m, np.nan)) if fin.any() else 0.0)
    else:
        raise ValueError(f"kind must be 'depth' or 'disparity', got {kind!r}")
    return m.astype(np.float32)


def read_map(path: Path) -> np.ndarray:
    """A single-channel map from ``.npy``, 8/16-bit ``.png`` or ``.pfm``."""
    try:
        if path.suffix == ".npy":
            m = np.load(path)
        elif path.suffix == ".pfm":
            m = read_pfm(path)
        else:
            from PIL import Image
            with Image.open(path) as im:
                m = np.asarray(im)
    except Exception as e:
        raise MediaError(f"{show(path)}: cannot read map ({type(e).__name__}: {one_line(e)})") from None
    if m.ndim == 3:
        m = m[..., 0]
    if m.ndim != 2:
        raise MediaError(f"{show(path)}: expected a single-channel 2-D map, got shape {m.shape}")
    return m


def read_pfm(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        header = f.readline().strip()
        if header not in (b"Pf", b"PF"):
            raise ValueError("not a PFM file")
        w, h = map(int, f.readline().split())
        scale = float(f.readline().strip())
        data = np.fromfile(f, dtype="<f4" if scale < 0 else ">f4")
    ch = 3 if header == b"PF" else 1
    data = data[: w * h * ch].reshape(h, w, ch)[..., 0]
    return np.flipud(data).astype(np.float32)   # PFM rows go bottom-up

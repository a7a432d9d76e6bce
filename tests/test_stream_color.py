"""The colour jitter the collate applies on the device: torchvision's operations, batched."""
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from inpaint_online.bundled import real_image
from inpaint_online.cache import open_cache
from inpaint_online.stream import CacheDataset, DataConfig, WarpCollate
from inpaint_online.stream.color import IDENTITY, apply_jitter, draw_jitter


def reference(img: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """One sample at a time with torchvision's own functions (float path)."""
    b, c, s, h = f.tolist()
    img = TF.adjust_brightness(img, b)
    img = TF.adjust_contrast(img, c)
    img = TF.adjust_saturation(img, s)
    return TF.adjust_hue(img, h)


def photos(n: int) -> torch.Tensor:
    names = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"]
    return torch.cat([real_image(names[i % 4])[..., :96, :128] for i in range(n)])


def test_each_sample_gets_its_own_factors_as_torchvision_applies_them():
    g = torch.Generator().manual_seed(3)
    img = photos(6)
    img[0, :, :20] = 0.5                  # grey rows: no saturation, hue undefined
    img[1, :, :10, :10] = 0.0             # black: max = 0
    f = torch.stack([draw_jitter(g, (0.4, 0.4, 0.4, 0.45)) for _ in range(6)])
    f[5] = torch.tensor(IDENTITY)
    out = apply_jitter(img, f)
    ref = torch.stack([reference(img[i], f[i]) for i in range(6)])
    assert (out - ref).abs().max() < 1e-5
    assert (out[5] - img[5]).abs().max() < 1e-5                 # identity keeps the picture
    assert (out[:5] - img[:5]).abs().amax((1, 2, 3)).min() > 0.05   # the others change
    assert out.min() >= 0 and out.max() <= 1


def test_draws_follow_the_configured_strength():
    g = torch.Generator().manual_seed(0)
    f = torch.stack([draw_jitter(g, (0.2, 0.1, 0.0, 0.02)) for _ in range(2000)])
    lo, hi = f.amin(0), f.amax(0)
    assert torch.allclose(lo, torch.tensor([0.8, 0.9, 1.0, -0.02]), atol=2e-3)
    assert torch.allclose(hi, torch.tensor([1.2, 1.1, 1.0, 0.02]), atol=2e-3)


def test_compiles_whole_graph():
    torch._dynamo.reset()
    fn = torch.compile(apply_jitter, fullgraph=True, backend="eager")
    g = torch.Generator().manual_seed(1)
    img, f = photos(2), torch.stack([draw_jitter(g, (0.2, 0.2, 0.2, 0.02)) for _ in range(2)])
    assert torch.allclose(fn(img, f), apply_jitter(img, f), atol=1e-6)


@pytest.mark.parametrize("clip", [False, True])
def test_collate_paths_agree_and_clip_frames_share_one_draw(small_cache, clip_cache, clip):
    cache = clip_cache if clip else small_cache
    m = open_cache(cache)
    ds = CacheDataset(m, m.samples(), DataConfig(crop=64, jitter_p=0.5, crop_window=1.0,
                                               clip_len=4 if clip else 1))
    items = [ds[(i % len(ds), 40 + i)] for i in range(6)]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    drawn = (batch["jitter"] != torch.tensor(IDENTITY)).any(1)
    assert drawn.any() and not drawn.all()
    sync = WarpCollate(sync_ok=True)(batch, step=2)
    nosync = WarpCollate(sync_ok=False)(batch, step=2)
    assert (sync.y - nosync.y).abs().max() < 1e-5
    plain = WarpCollate(augment=False)(batch, step=2)
    y, p = sync.y, plain.y
    if clip:
        # every frame of a clip shifted by the same factors as frame 0
        ref = torch.stack([torch.stack([reference(p[i, k], batch["jitter"][i])
                                        for k in range(p.shape[1])]) for i in range(6)])
    else:
        ref = torch.stack([reference(p[i], batch["jitter"][i]) for i in range(6)])
    assert (y - ref).abs().max() < 1e-5

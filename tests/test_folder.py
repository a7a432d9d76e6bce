"""data.source folder: training from a fixed dataset in iw3's layout — an export of this
project read back exactly, iw3's crops and mask widening, clips, bad pairs skipped with one
line, resume, and the refusals."""
import json
import logging

import numpy as np
import pytest
import torch
from conftest import real_image, tiny_config, tiny_video_config
from PIL import Image

from inpaint_online.checkpoint import load_checkpoint
from inpaint_online.config import ConfigError, load_config
from inpaint_online.errors import DataError
from inpaint_online.export import export_dataset, read_sample
from inpaint_online.stream import DataConfig, FolderCollate, FolderDataset, split_folder
from inpaint_online.train import train
from inpaint_online.train.loop import validation_source


@pytest.fixture(scope="module")
def exported(small_cache, tmp_path_factory):
    """A 16 + 8 sample export of the tiny config at 64 px (not for iw3's reader: forced)."""
    out = tmp_path_factory.mktemp("fixed")
    cfg = tiny_config(small_cache, out / "runs", "collate.min_hole_px=30")
    export_dataset(cfg, out / "data", 16, 8, size=64, force=True, progress=False, threads=2)
    return out / "data"


def folder_cfg(cache, tmp_path, data, *o):
    return tiny_config(cache, tmp_path, "data.source=folder", f"data.folder={data}", *o)


def photo(name, size):
    """A bundled photo's top-left ``size`` square, uint8 ``(H, W, 3)``."""
    u8 = (real_image(name)[0, :, :size, :size] * 255).round().byte()
    return u8.permute(1, 2, 0).numpy().copy()


def write_pair(d, name, rgb, mask):
    Image.fromarray(rgb).save(d / f"{name}_C.png")
    Image.fromarray(mask).save(d / f"{name}_M.png")


def test_an_export_is_read_back_exactly_at_iw3s_fixed_crop(exported):
    """Held-out samples: the file's pixels, at the grid crop (stride crop/4) with the most
    holes — checked against a brute-force search over every grid position."""
    cfg = DataConfig(crop=48)
    ds = FolderDataset(split_folder(exported, "eval"), cfg, train=False)
    assert len(ds) == 8
    for i in range(len(ds)):
        name = ds.label(i)
        _, m_full, y_full = read_sample(exported / "eval", name)
        best, where = -1, None
        for y in range(0, 64 - 48 + 1, 12):
            for x in range(0, 64 - 48 + 1, 12):
                s = int(m_full[0, y:y + 48, x:x + 48].sum())
                if s > best:
                    best, where = s, (y, x)
        y0, x0 = where
        s = ds[(i, 5)]
        assert torch.equal(s["rgb"], (y_full[:, y0:y0 + 48, x0:x0 + 48] * 255).round().byte())
        assert torch.equal(s["mask"], m_full[:, y0:y0 + 48, x0:x0 + 48].byte())
    b = FolderCollate(augment=False)({k: torch.stack([ds[(i, i)][k] for i in range(4)])
                                      for k in ("rgb", "mask", "index", "seed", "jitter")}, 0)
    assert b.params is None and b.x.shape == (4, 3, 48, 48)
    assert torch.equal(b.x, b.y * (1 - b.mask))
    # no depth: the background side is the right (right-view orientation), zero in the holes
    ramp = torch.linspace(1, 0, 48).expand(4, 1, 48, 48)
    assert torch.equal(b.depth, ramp * (1 - b.mask))


def test_training_crops_follow_the_seed_and_pick_the_most_varied_window(exported):
    cfg = DataConfig(crop=32, crop_candidates=4, jitter_p=0.0)
    ds = FolderDataset(split_folder(exported, "train"), cfg, train=True)
    a, b, c = ds[(3, 11)], ds[(3, 11)], ds[(3, 12)]
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["rgb"], c["rgb"]) or not torch.equal(a["mask"], c["mask"])
    # the chosen crop is the most colourful of the 4 candidates drawn from the seed
    _, _, y_full = read_sample(exported / "train", ds.label(3))
    g = torch.Generator().manual_seed(11)
    ys = torch.randint(0, 64 - 32 + 1, (4,), generator=g).tolist()
    xs = torch.randint(0, 64 - 32 + 1, (4,), generator=g).tolist()
    u8 = (y_full * 255).round().byte()
    crops = [u8[:, y:y + 32, x:x + 32] for y, x in zip(ys, xs)]
    std = [float(cr.float().std(dim=(1, 2)).sum()) for cr in crops]
    assert torch.equal(a["rgb"], crops[int(np.argmax(std))])


def test_mask_widening_grows_holes_toward_the_background_only(exported):
    cfg = load_config(None, ["collate.widen_bg_p=1", "collate.widen_bg_px=[3,3]",
                             "collate.widen_fg_p=0"])
    ds = FolderDataset(split_folder(exported, "train"), DataConfig(crop=48, jitter_p=0.0))
    cpu = {k: torch.stack([ds[(i, i)][k] for i in range(4)])
           for k in ("rgb", "mask", "index", "seed", "jitter")}
    plain = FolderCollate(cfg.collate, augment=False)(cpu, 0)
    wide = FolderCollate(cfg.collate, augment=True)(cpu, 0)
    m, w = plain.mask.bool(), wide.mask.bool()
    expect = m.clone()
    for k in (1, 2, 3):
        expect[..., k:] |= m[..., :-k]
    assert torch.equal(w, expect) and w.sum() > m.sum()
    assert torch.equal(wide.x, wide.y * (1 - wide.mask))


def test_bad_pairs_are_skipped_with_one_line_each(tmp_path, caplog):
    d = tmp_path / "data" / "train"
    d.mkdir(parents=True)
    img = photo("astronaut.png", 96)
    hole = np.zeros((96, 96), np.uint8)
    hole[30:60, 40:50] = 255
    write_pair(d, "good", img, hole)
    write_pair(d, "size", img, hole[:80])
    write_pair(d, "empty", img, np.zeros_like(hole))
    write_pair(d, "small", img[:40, :40], hole[10:50, 20:60])
    (d / "junk_C.png").write_bytes(b"not a png")
    Image.fromarray(hole).save(d / "junk_M.png")
    Image.fromarray(hole).save(d / "lonely_M.png")            # no _C.png
    with caplog.at_level(logging.WARNING, "inpaint_online"):
        ds = FolderDataset(d, DataConfig(crop=48), train=True)
        assert len(ds) == 5
        got = {ds.label(int(ds[(i, i)]["index"])) for i in range(len(ds))}
    assert got == {"good"}
    lines = sorted(r.getMessage() for r in caplog.records)
    assert lines == sorted([
        f"skipping 1 mask(s) without their _C.png in {d} (first: lonely_M.png)",
        f"skipping {d / 'empty_M.png'}: the mask has no hole pixel",
        f"skipping {d / 'size_M.png'}: mask 96x80, image 96x96: sizes differ",
        f"skipping {d / 'small_M.png'}: 40x40 is smaller than data.crop=48",
        f"skipping {d / 'junk_M.png'}: unreadable (UnidentifiedImageError: cannot identify "
        f"image file '{d / 'junk_C.png'}')",
    ])
    (d / "good_M.png").unlink()
    for name in ("size", "empty", "small", "junk"):
        (d / f"{name}_M.png").unlink()
    with pytest.raises(DataError, match="no NAME_M.png \\+ NAME_C.png pairs to train on"):
        FolderDataset(d, DataConfig(crop=48))
    with pytest.raises(DataError, match="no 'eval' folder"):
        split_folder(tmp_path / "data", "eval")


def test_clips_take_a_window_of_clip_len_frames_reversed_half_the_time(tmp_path):
    root = tmp_path / "train"
    img = photo("coffee.png", 64)
    for c in range(2):
        clip = root / f"clip{c}"
        clip.mkdir(parents=True)
        for j in range(6):
            hole = np.zeros((64, 64), np.uint8)
            hole[10:40, 5 + j * 4:9 + j * 4] = 255           # the frame number, in the mask
            write_pair(clip, f"{j:04d}", img, hole)
    short = root / "short"
    short.mkdir()
    write_pair(short, "0000", img, np.full((64, 64), 255, np.uint8))
    cfg = DataConfig(crop=64, clip_len=4, jitter_p=0.0)
    ds = FolderDataset(root, cfg, train=True)
    assert len(ds) == 2 and ds.label(1) == "clip1"

    def frames(s):
        return [int(s["mask"][j, 0, 20].nonzero()[0]) for j in range(4)]
    orders = set()
    for seed in range(20):
        f = frames(ds[(0, seed)])
        step = f[1] - f[0]
        assert step in (4, -4) and f == [f[0] + k * step for k in range(4)]
        orders.add(step)
    assert orders == {4, -4}
    held = FolderDataset(root, cfg, train=False)
    assert frames(held[(0, 0)]) == [9, 13, 17, 21]           # the middle frames 1..4


def test_folder_training_validates_like_a_stream_and_resumes_exactly(small_cache, exported,
                                                                     tmp_path):
    common = ("data.crop=32", "data.num_workers=0", "data.jitter_p=0.5", "collate.widen_bg_p=0.5")
    a = folder_cfg(small_cache, tmp_path / "a", exported, *common)
    assert validation_source(a) == "cache"
    once = train(a, progress=False)
    train(folder_cfg(small_cache, tmp_path / "b", exported, *common, "train.stop_at=3"),
          progress=False)
    resumed = train(folder_cfg(small_cache, tmp_path / "b", exported, *common), resume=True,
                    progress=False)
    x, y = once.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(x[k], y[k]) for k in x)
    # validated on the cache's held-out samples: the very set a streaming run scores on
    stream = train(tiny_config(small_cache, tmp_path / "s", "data.crop=32", "train.steps=1",
                               "train.val_every=1"), progress=False)
    assert once.val[0] == pytest.approx(stream.val[0])          # step 0: same model, same set
    best = load_checkpoint(tmp_path / "a" / "t" / "checkpoints" / "best.pt")
    assert best["config"]["data"]["source"] == "folder"
    # without a cache, the folder's own eval split
    own = folder_cfg(tmp_path / "nocache", tmp_path / "c", exported, *common, "train.steps=2")
    assert validation_source(own) == "folder"
    res = train(own, progress=False)
    assert res.val and res.val[-1]["psnr_hole"] > 5


def test_folder_clips_train_a_video_model(clip_cache, tmp_path):
    out = tmp_path / "data"
    cfg = tiny_video_config(clip_cache, tmp_path / "x", "collate.min_hole_px=10")
    export_dataset(cfg, out, 2, 2, size=64, clip_len=6, force=True, progress=False, threads=2)
    res = train(tiny_video_config(clip_cache, tmp_path / "r", "data.source=folder",
                                  f"data.folder={out}", "data.val_from=folder", "data.crop=32",
                                  "train.steps=2", "train.val_every=2"), progress=False)
    assert res.step == 2 and res.val[-1]["psnr_hole"] > 5


@pytest.mark.parametrize("overrides, message", [
    (["data.source=folder"], "data.source folder needs data.folder"),
    (["data.source=disk"], "data.source must be stream or folder, got 'disk'"),
    (["data.source=folder", "data.folder=x", "collate.with_depth=true"],
     "collate.with_depth needs depth, and a fixed dataset"),
    (["data.source=folder", "data.folder=x", "data.composite_p=0.5"],
     "data.composite_p makes layered samples from the depth cache"),
])
def test_folder_settings_that_cannot_work_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_the_premise_benchmark_keeps_its_overrides_and_refuses_other_ones(small_cache, tmp_path,
                                                                          capsys):
    """benchmarks/online_vs_offline.py passes config overrides to every arm; a later call on
    the same --out with other ones is refused (its arms would not compare)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "online_vs_offline.py"
    spec = importlib.util.spec_from_file_location("online_vs_offline", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out, demo = tmp_path / "premise", str(path.parents[1] / "configs" / "demo.yaml")
    ov = [f"data.cache_dir={small_cache}", "data.val_count=4"]
    assert bench.train_args(demo, out, "fixed-1000", 1, 10, 5, {1000: "F"}, ov)[:4] \
        == ["--config", demo, *ov]
    out.mkdir()
    (out / "overrides.json").write_text(json.dumps({"config": demo, "overrides": []}))
    assert bench.main(["--config", demo, "--out", str(out), "--plan", *ov]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"online_vs_offline: {out} was started with ") and err.count("\n") == 1
    assert bench.main(["--config", demo, "--out", str(out), "--plan", "data.nope=1"]) == 2
    assert "unknown key(s) data.nope" in capsys.readouterr().err

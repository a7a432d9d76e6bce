"""iw3's light networks here: nunif's parameter names and shapes, their conventions, the model
file iw3 loads, training and using them (benchmarks/iw3_model_parity.py checks the outputs
against nunif's own code where a nunif checkout exists)."""
import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from inpaint_online.bundled import real_image
from inpaint_online.checkpoint import CheckpointError
from inpaint_online.config import ConfigError, load_config
from inpaint_online.export_model import main as export_main
from inpaint_online.inference import load_model
from inpaint_online.iw3net import (
    SEQ_LEN,
    LightInpaintV1,
    LightVideoInpaintV1,
    NunifFileError,
    load_nunif_model,
    save_nunif_model,
)
from inpaint_online.iw3net.layers import WindowGMLP2d, gaussian_blur_mask
from inpaint_online.models import ModelConfig, build_model
from inpaint_online.train import train

DATA = Path(__file__).parent / "data" / "iw3_model_params.json"
CLASSES = {"inpaint.light_inpaint_v1": LightInpaintV1,
           "inpaint.light_video_inpaint_v1": LightVideoInpaintV1}


@pytest.mark.parametrize("name", list(CLASSES))
def test_parameter_names_and_shapes_are_nunifs(name):
    """Against the list benchmarks/iw3_model_parity.py --dump-shapes extracted from nunif."""
    want = json.loads(DATA.read_text())[name]
    model = CLASSES[name]()
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert got == want["params"]
    assert list(got) == list(want["params"])                  # same order as nunif's
    assert getattr(model, "kwargs", {}) == want["kwargs"]


def holes(x: torch.Tensor, seed=0) -> torch.Tensor:
    """Blocky holes like a warp's: columns of a few rows."""
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(x.shape[0], 1, *x.shape[-2:])
    for i in range(x.shape[0]):
        for _ in range(4):
            y0 = int(torch.randint(0, x.shape[-2] - 20, (1,), generator=g))
            x0 = int(torch.randint(0, x.shape[-1] - 12, (1,), generator=g))
            m[i, :, y0:y0 + 20, x0:x0 + 8] = 1
    return m


def test_known_pixels_away_from_holes_pass_through_any_size():
    torch.manual_seed(0)
    model = LightInpaintV1().eval()
    x = real_image("coffee.png")[..., :90, :150]           # not a multiple of 64
    m = holes(x)
    with torch.no_grad():
        out = model(x, m)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    soft = (gaussian_blur_mask(m) + m).clamp(0, 1)
    far = soft == 0
    assert far.float().mean() > 0.5
    assert torch.equal(out.expand_as(x)[far.expand_as(x)], x[far.expand_as(x)])
    assert (out - x).abs()[m.expand_as(x).bool()].mean() > 0.01     # the holes were filled


def test_windows_mix_only_their_own_tokens():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 16, 16)
    for shift, lo in ((False, 0), (True, 2)):
        blk = WindowGMLP2d(8, window_size=4, shift=shift)
        y2 = x.clone()
        y2[..., 5, 5] += 1.0
        d = (blk(y2) - blk(x)).abs().sum(1)[0] > 0
        rows, cols = d.nonzero(as_tuple=True)
        # unshifted windows start at multiples of 4; shifted ones 2 px earlier
        start = (5 + lo) // 4 * 4 - lo
        assert rows.min() >= start and rows.max() < start + 4
        assert cols.min() >= start and cols.max() < start + 4
        assert d.sum() > 1                                   # and inside it, they do mix


def test_the_video_model_keeps_clips_apart_and_mixes_frames_within_one():
    torch.manual_seed(0)
    model = LightVideoInpaintV1().eval()
    x = real_image("coffee.png")[..., :64, :64].expand(2, SEQ_LEN, -1, -1, -1).clone()
    m = holes(x.flatten(0, 1)).view(2, SEQ_LEN, 1, 64, 64)
    with torch.no_grad():
        a = model(x, m)
        x2 = x.clone()
        x2[1, 3] = x2[1, 3].flip(-1)                          # change one frame of clip 1
        b = model(x2, m)
    assert torch.equal(a[0], b[0])                            # clip 0 untouched
    others = [k for k in range(SEQ_LEN) if k != 3]
    # its neighbours in time moved (little: the gates start near the identity)
    assert (a[1, others] - b[1, others]).abs().max() > 1e-6
    with torch.no_grad():                                     # 5 frames: padded as iw3 does
        assert model(x[:, :5], m[:, :5]).shape == (2, 5, 3, 64, 64)


def test_the_model_file_is_nunifs_format_and_reads_back(tmp_path):
    torch.manual_seed(0)
    for cls in CLASSES.values():
        model = cls().eval()
        path = save_nunif_model(model, tmp_path / "m.pth", train_kwargs={"config": {"a": (1, 2)},
                                                                        "path": tmp_path})
        data = torch.load(path, weights_only=True)             # as iw3 loads it
        assert set(data) == {"nunif_model", "name", "updated_at", "kwargs", "train_kwargs",
                             "state_dict"}
        assert data["nunif_model"] == 1 and data["name"] == cls.nunif_name
        assert data["train_kwargs"] == {"config": {"a": [1, 2]}, "path": str(tmp_path)}
        back, meta = load_nunif_model(path)
        x = real_image()[..., :64, :64].expand(SEQ_LEN, -1, -1, -1)
        m = holes(x)
        with torch.no_grad():
            assert torch.equal(back(x, m), model(x, m))
        assert meta["name"] == cls.nunif_name and "state_dict" not in meta
        assert isinstance(load_model(path), cls)               # stereo/inpaint take it too


def test_bad_model_files_are_one_line(tmp_path):
    model = LightInpaintV1()
    good = save_nunif_model(model, tmp_path / "good.pth")
    data = torch.load(good, weights_only=True)
    torch.save({**data, "name": "inpaint.other_v9"}, tmp_path / "unknown.pth")
    with pytest.raises(NunifFileError, match=r"unknown.pth: nunif model 'inpaint.other_v9' is not "
                                             r"one this project has \(it has inpaint.light_inpaint_v1"):
        load_nunif_model(tmp_path / "unknown.pth")
    sd = dict(data["state_dict"])
    sd.pop("mask_bias")
    torch.save({**data, "state_dict": sd}, tmp_path / "short.pth")
    with pytest.raises(NunifFileError, match=r"short.pth: the weights do not fit "
                                             r"inpaint.light_inpaint_v1 \(.*mask_bias"):
        load_nunif_model(tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match="short.pth: the weights do not fit"):
        load_model(tmp_path / "short.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="junk.pth: not a readable checkpoint"):
        load_model(tmp_path / "junk.pth")


def test_video_model_takes_clips_of_twelve():
    with pytest.raises(ConfigError, match="data.clip_len must be 12 .or a multiple., got 8"):
        load_config(None, ["model.kind=iw3_light_video_inpaint_v1", "data.clip_len=8"])
    with pytest.raises(ConfigError, match="data.clip_len must be 1"):
        load_config(None, ["model.kind=iw3_light_inpaint_v1", "data.clip_len=12"])
    assert isinstance(build_model(ModelConfig(kind="iw3_light_video_inpaint_v1")), LightVideoInpaintV1)


def test_train_export_and_use_iw3s_image_model(small_cache, tmp_path, capsys):
    cfg = tiny_config(small_cache, tmp_path, "model.kind=iw3_light_inpaint_v1", "data.crop=64",
                      "train.steps=2", "train.val_every=2", "train.ckpt_every=2",
                      "train.image_every=2", "data.val_count=2", "data.batch_size=2")
    trainer = train(cfg, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["kind"] == "val"]
    assert [v["step"] for v in val] == [0, 2] and all(v["psnr_hole"] > 0 for v in val)
    ck = tmp_path / "t" / "checkpoints" / "last.pt"
    out = tmp_path / "models" / "mine.pth"
    assert export_main(["--checkpoint", str(ck), "--out", str(out), "--name", "mine"]) == 0
    text = capsys.readouterr().out
    assert f"mine:\n  image: {out.resolve()}" in text
    assert "--method forward_inpaint --inpaint-model mine" in text
    back = load_model(out)
    sd = trainer.model.state_dict()
    assert all(torch.equal(sd[k].cpu(), v) for k, v in back.state_dict().items())
    # fine-tuning from a nunif model file (iw3's released weights work the same way)
    b = train(tiny_config(small_cache, tmp_path, "model.kind=iw3_light_inpaint_v1", "data.crop=64",
                          "run.name=b", "train.steps=1", "optim.lr=1e-30", "data.batch_size=2",
                          "data.val_count=2", f"train.init_from={out}"), progress=False)
    assert all(torch.allclose(sd[k].cpu(), v.cpu(), atol=1e-6) for k, v in b.model.state_dict().items())
    with pytest.raises(CheckpointError, match="nunif model 'inpaint.light_inpaint_v1' does not fit "
                                              "model.kind 'gated_unet'"):
        train(tiny_config(small_cache, tmp_path, "run.name=c", f"train.init_from={out}"),
              progress=False)


def test_export_refuses_other_architectures(checkpoint, tmp_path, capsys):
    assert export_main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "x.pth")]) == 1
    err = capsys.readouterr().err
    assert "model.kind 'gated_unet' is not one of iw3's architectures" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x.pth").exists()


def test_offset_models_are_scored_and_trained_inside_their_border(small_cache, tmp_path):
    from inpaint_online.cache import open_cache
    from inpaint_online.stream import CacheDataset, WarpCollate
    from inpaint_online.train import Trainer
    from inpaint_online.train.validation import evaluate
    cfg = tiny_config(small_cache, tmp_path, "data.crop=64", "warp.level=3")
    m = open_cache(small_cache)
    ds = CacheDataset(m, m.samples(), cfg.data)
    items = [ds[(i, 50 + i)] for i in range(4)]
    b = WarpCollate(cfg.warp, cfg.collate)({k: torch.stack([it[k] for it in items]) for k in items[0]}, 0)
    border = torch.ones_like(b.mask, dtype=torch.bool)
    border[..., 16:-16, 16:-16] = False
    assert (b.mask.bool() & border).any() and (b.mask.bool() & ~border).any()

    class Oracle(torch.nn.Module):      # right inside, wrong in the 16-px border
        def __init__(self, offset):
            super().__init__()
            self.i2i_offset, self.w = offset, torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, mask, depth=None):
            return torch.where(border, 1 - b.y, b.y) + self.w

    t = Trainer(cfg, torch.device("cpu"))
    inside, whole = evaluate(t, [b], Oracle(16)), evaluate(t, [b], Oracle(0))
    assert inside["psnr_hole"] > whole["psnr_hole"] + 10
    t.model, t.net, t.offset = Oracle(16), Oracle(16), 16
    loss, parts = t.step(b)
    assert float(parts["hole_l1"]) < 1e-6


def test_iw3_model_resumes_exactly_and_its_file_runs_compare_and_stereo(small_cache, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from inpaint_online.bundled import photo_depth, skimage_data_dir
    from inpaint_online.compare import main as compare_main
    from inpaint_online.stereo import main as stereo_main
    base = ["model.kind=iw3_light_inpaint_v1", "data.crop=64", "data.batch_size=2",
            "data.val_count=2", "train.ema_decay=0.9", "train.steps=2", "train.val_every=2",
            "train.ckpt_every=1"]
    whole = train(tiny_config(small_cache, tmp_path, "run.name=w", *base), progress=False)
    train(tiny_config(small_cache, tmp_path, "run.name=r", *base, "train.stop_at=1"), progress=False)
    resumed = train(tiny_config(small_cache, tmp_path, "run.name=r", *base), progress=False,
                    resume=True)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    from inpaint_online.checkpoint import load_checkpoint
    ea, eb = (load_checkpoint(tmp_path / r / "checkpoints" / "last.pt")["model_ema"] for r in "wr")
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    out = tmp_path / "m.pth"
    assert export_main(["--checkpoint", str(tmp_path / "w" / "checkpoints" / "last.pt"),
                        "--out", str(out)]) == 0
    capsys.readouterr()
    # the file carries its run's config: compare finds the held-out sources by it
    assert compare_main(["--checkpoint", str(out), "--count", "2", "--device", "cpu"]) == 0
    assert "model" in capsys.readouterr().out
    img = Image.open(skimage_data_dir() / "coffee.png").convert("RGB").crop((0, 0, 200, 150))
    img.save(tmp_path / "c.png")
    np.save(tmp_path / "d.npy", photo_depth("coffee.png")[0, 0, :150, :200].numpy())
    assert stereo_main(["--checkpoint", str(out), "--image", str(tmp_path / "c.png"),
                        "--depth", str(tmp_path / "d.npy"), "--divergence", "3",
                        "--output", str(tmp_path / "sbs.png"), "--device", "cpu"]) == 0
    assert Image.open(tmp_path / "sbs.png").size == (400, 150)

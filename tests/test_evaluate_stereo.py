"""evaluate_stereo: true disocclusions of stereo pairs rendered here (a foreground layer
over a fully known background, both real photos), so the answer is known."""
import json
import math

import numpy as np
import pytest
import torch
from conftest import skimage_data_dir
from PIL import Image

from inpaint_online.evaluate_stereo import (
    evaluate_pair,
    fill_unknown,
    main,
    max_run,
    methods,
    read_disparity,
    render_layered_pair,
    true_disocclusions,
)
from inpaint_online.inference import split_border_band
from inpaint_online.media import MediaError

H, W = 150, 224


def photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(skimage_data_dir() / name).convert("RGB").resize((W, H)))


def horse_matte() -> np.ndarray:
    horse = np.asarray(Image.open(skimage_data_dir() / "horse.png").convert("L").resize((140, 92)))
    m = np.zeros((H, W), bool)
    m[40:132, 40:180] = horse < 128
    return m


def pair(d_bg=5, d_fg=25, name="p"):
    return render_layered_pair(photo("coffee.png"), photo("astronaut.png"), horse_matte(),
                               d_bg, d_fg, name)


def t(a):
    return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255


def write_pfm(path, d):
    h, w = d.shape
    with open(path, "wb") as f:
        f.write(f"Pf\n{w} {h}\n-1.0\n".encode())
        f.write(np.flipud(d).astype("<f4").tobytes())


def test_holes_are_exactly_the_background_the_foreground_hid():
    """Integer disparities: a right pixel showing background column x + d_bg is a hole iff
    the foreground covered that column in the left view (independent of the splat)."""
    p = pair(5, 25)
    warped, hole, scored, _ = true_disocclusions(t(p.left), torch.from_numpy(p.disparity)[None, None])
    m = horse_matte()
    cols = np.arange(W)
    src = cols + 5
    fg_right = np.zeros_like(m)
    fg_right[:, :W - 25] = m[:, 25:]
    expect = np.zeros_like(m)
    expect[:, src < W] = m[:, src[src < W]]
    expect |= (src >= W)[None, :]                                   # the right edge band
    expect &= ~fg_right
    assert np.array_equal(hole[0, 0].numpy(), expect)
    # the known pixels are the right view itself
    known = ~hole[0, 0]
    assert torch.equal((warped[0] * 255).round()[:, known], t(p.right)[0].mul(255).round()[:, known])
    # the border band (right edge, 5 px) is not scored; the interior holes are
    assert not scored[0, 0, :, W - 5:].any() and scored.sum() == split_border_band(hole)[0].sum()
    assert max_run(split_border_band(hole)[0]) <= 20 + 1


def test_holes_lie_on_the_background_side():
    """A solid foreground wider than the shift (an ellipse cut to its wide rows): each row's
    hole starts right after the foreground and ends on the background — the side a right
    view uncovers."""
    yy, xx = np.mgrid[:H, :W]
    disk = ((yy - 75) ** 2 / 50 ** 2 + (xx - 100) ** 2 / 60 ** 2 < 1) & (abs(yy - 75) < 40)
    p = render_layered_pair(photo("coffee.png"), photo("astronaut.png"), disk, 3, 30)
    _, hole, scored, wdisp = true_disocclusions(t(p.left), torch.from_numpy(p.disparity)[None, None])
    h, d = scored[0, 0].numpy(), wdisp[0, 0].numpy()
    ys, xs = np.nonzero(h[:, 1:] & ~h[:, :-1])                       # the pixel before each run
    ye, xe = np.nonzero(h[:, :-1] & ~h[:, 1:])                       # last pixel of each run
    assert len(xs) == len(xe) == 79 and h.sum() == 79 * 27           # one run per row
    assert np.all(d[ys, xs] > 29) and np.all(d[ye, xe + 1] < 4)     # fg on the left, bg right
    assert np.all(xe - xs == 27)                                     # d_fg - d_bg wide


def test_zero_disparity_makes_no_holes():
    p = pair(0, 0)
    res = evaluate_pair(p, methods(None))
    assert res["hole_share"] == 0 and all(s["pixels"] == 0 and math.isnan(s["psnr"])
                                          for s in res["methods"].values())


def test_a_fill_that_copies_the_truth_scores_infinity():
    p = pair(4, 24)
    truth = t(p.right)
    res = evaluate_pair(p, {"oracle": lambda x, m, d: truth, "zeros": lambda x, m, d: x * 0})
    assert res["methods"]["oracle"]["psnr"] == math.inf
    assert res["methods"]["oracle"]["ssim"] == pytest.approx(1.0)
    assert res["methods"]["zeros"]["psnr"] < 15 and res["max_hole_width"] == 20


def test_every_method_keeps_the_known_pixels_and_fills_the_holes():
    p = pair(4, 24)
    res = evaluate_pair(p, methods(None))
    assert {"opencv telea", "opencv navier-stokes", "diffusion", "push-pull", "background copy",
            "background push-pull", "row interpolation"} <= set(res["methods"])
    warped, hole, _, truth, outs = res["_pictures"]
    for name, out in outs.items():
        assert torch.equal(out[:, :, ~hole[0, 0]], warped[:, :, ~hole[0, 0]]), name
        s = res["methods"][name]
        assert 8 < s["psnr"] < 40 and 0 < s["ssim"] < 1, (name, s)


def test_unknown_disparity_takes_the_farther_neighbour_and_its_holes_are_not_scored():
    p = pair(4, 24)
    known = torch.from_numpy(p.disparity)[None, None]
    _, hole0, scored0, _ = true_disocclusions(t(p.left), known, guard=2)
    # a block of unknown disparity in the background just right of a hole's far end (where
    # Middlebury's unknowns sit: background next to a foreground edge)
    m = horse_matte()
    h = scored0[0, 0].numpy()
    ye, xe = np.nonzero(h[:, :-1] & ~h[:, 1:])
    i = next(i for i in range(len(ye)) if 45 < ye[i] < 125 and xe[i] + 14 < W
             and not m[ye[i] - 3:ye[i] + 4, xe[i] + 5:xe[i] + 11].any()
             and m[ye[i] - 3:ye[i] + 4, xe[i] + 4].any())           # foreground on its left
    y, x = int(ye[i]), int(xe[i]) + 5                               # left column of the block
    d = p.disparity.copy()
    d[y - 3:y + 4, x:x + 5] = np.nan
    filled, unknown = fill_unknown(torch.from_numpy(d)[None, None])
    assert unknown.sum() == 35 and torch.all(filled[0, 0, y - 3:y + 4, x:x + 5] == 4)
    _, hole, scored, _ = true_disocclusions(t(p.left), torch.from_numpy(d)[None, None], guard=2)
    assert torch.equal(hole, hole0)                                  # the fill was right here
    untrusted = torch.zeros_like(hole0)
    untrusted[..., y - 3:y + 4, x - 4:x + 1] = True                  # the block, moved by -4
    near = torch.nn.functional.max_pool2d(untrusted.float(), 5, 1, 2) > 0
    assert torch.equal(scored, scored0 & ~near) and scored.sum() < scored0.sum()


def test_disparity_readers(tmp_path):
    d = np.array([[1.5, np.inf], [0.0, 20.25]], np.float32)
    write_pfm(tmp_path / "d.pfm", d)
    r = read_disparity(tmp_path / "d.pfm")
    assert r[0, 0] == 1.5 and np.isnan(r[0, 1]) and r[1, 0] == 0 and r[1, 1] == 20.25
    kitti = np.array([[0, 256], [512 + 64, 65535]], np.uint16)
    Image.fromarray(kitti).save(tmp_path / "k.png")
    r = read_disparity(tmp_path / "k.png")
    assert np.isnan(r[0, 0]) and r[0, 1] == 1.0 and r[1, 0] == 2.25
    np.save(tmp_path / "n.npy", np.array([[-1, 0], [np.nan, 3]], np.float32))
    r = read_disparity(tmp_path / "n.npy")
    assert np.isnan(r[0, 0]) and r[0, 1] == 0 and np.isnan(r[1, 0]) and r[1, 1] == 3
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "e.png")
    with pytest.raises(MediaError, match=r"e\.png: a disparity PNG must be 16-bit"):
        read_disparity(tmp_path / "e.png")
    (tmp_path / "bad.pfm").write_bytes(b"junk")
    with pytest.raises(MediaError, match=r"bad\.pfm: cannot read disparity"):
        read_disparity(tmp_path / "bad.pfm")


def save_middlebury(folder, p, disp_name="disp0.pfm"):
    folder.mkdir(parents=True)
    Image.fromarray(p.left).save(folder / "im0.png")
    Image.fromarray(p.right).save(folder / "im1.png")
    write_pfm(folder / disp_name, np.where(np.isnan(p.disparity), np.inf, p.disparity))


def test_cli_on_a_folder_of_pairs(checkpoint, tmp_path, capsys):
    root = tmp_path / "pairs"
    save_middlebury(root / "a", pair(4, 24))
    save_middlebury(root / "b", pair(np.linspace(2, 6, W), 30))
    (root / "c").mkdir()
    Image.fromarray(photo("coffee.png")).save(root / "c" / "im0.png")      # incomplete
    out = tmp_path / "out"
    rc = main(["--checkpoint", str(checkpoint), "--pairs", str(root), "--out", str(out),
               "--device", "cpu"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert f"evaluate_stereo: {root / 'c'}: skipped, no im1.png / disp0.pfm" in cap.err
    assert "a: " in cap.out and "b: " in cap.out and "average over 2 pair(s)" in cap.out
    res = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in res["pairs"]] == ["a", "b"]
    assert {"model", "opencv telea", "diffusion"} <= set(res["average"])
    pic = np.array(Image.open(out / "a.png"))
    rows = 2 + len(res["average"])
    assert pic.shape[0] == 14 + rows * (14 + H + 2) + 2
    tint = (pic[..., 0] >= 178) & (pic[..., 1] <= 77) & (pic[..., 2] >= 178)
    assert tint[:14 + 14 + H].any() and not tint[14 + 14 + H + 2:].any()   # holes in row 1 only


def test_cli_refuses_bad_input_with_one_line(tmp_path, capsys):
    p = pair(4, 24)
    save_middlebury(tmp_path / "a", p)
    assert main(["--pairs", str(tmp_path), "--left", "x", "--out", str(tmp_path / "o")]) == 2
    assert "give --pairs DIR, or all of --left, --right and --disparity" in capsys.readouterr().err
    d = p.disparity.copy()
    d[:, : W * 2 // 3] = np.nan
    np.save(tmp_path / "d.npy", d)
    rc = main(["--left", str(tmp_path / "a" / "im0.png"), "--right", str(tmp_path / "a" / "im1.png"),
               "--disparity", str(tmp_path / "d.npy"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"evaluate_stereo: error: {tmp_path / 'd.npy'}: 67% of the disparity "
                               "is unknown (more than 50%): the true holes cannot be found"]
    small = Image.fromarray(p.right).resize((100, 50))
    small.save(tmp_path / "r.png")
    rc = main(["--left", str(tmp_path / "a" / "im0.png"), "--right", str(tmp_path / "r.png"),
               "--disparity", str(tmp_path / "a" / "disp0.pfm"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == (f"evaluate_stereo: error: {tmp_path / 'r.png'}: 100x50 but the left "
                               f"view {tmp_path / 'a' / 'im0.png'} is {W}x{H}")


def test_share_probe_separates_the_share_from_the_correction():
    """benchmarks/share_probe.py on a rendered pair: an untrained dual model (zero
    correction, half of each fill) scores below its share forced to 1, which equals the
    background fill alone; with the share's logit at the top all three agree; a correction
    on top of a share of 1 moves only 'share 1'."""
    import importlib.util
    from pathlib import Path

    from inpaint_online.models import ModelConfig, build_model
    spec = importlib.util.spec_from_file_location(
        "share_probe", Path(__file__).resolve().parents[1] / "benchmarks" / "share_probe.py")
    sp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sp)
    model = build_model(ModelConfig(channels=8, levels=2, blocks=0, dilations=(2,), prefill="dual",
                                    use_depth=True)).eval()
    p = pair(5, 25)
    half = sp.probe(model, p)
    assert half["share"] == pytest.approx(0.5, abs=1e-6)
    assert half["share 1"] == pytest.approx(half["background fill alone"], abs=1e-6)
    assert half["as trained"] < half["share 1"] - 0.2        # true disocclusions: the background side
    with torch.no_grad():
        model.head.bias[3] = 30.0
    top = sp.probe(model, p)
    assert top["share"] > 0.999
    assert top["as trained"] == pytest.approx(top["background fill alone"], abs=1e-6)
    with torch.no_grad():
        model.head.bias[:3] = 0.1
    shifted = sp.probe(model, p)
    assert shifted["share 1"] < shifted["background fill alone"] - 0.1
    assert shifted["background fill alone"] == pytest.approx(top["background fill alone"], abs=1e-6)

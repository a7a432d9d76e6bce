"""Inference: inpaint and stereo CLIs on real images, checkpoint safety, baseline comparison."""
import io
import re

import numpy as np
import pytest
import torch
from conftest import photo_depth, skimage_data_dir, tiny_config
from PIL import Image

from inpaint_online.checkpoint import FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from inpaint_online.compare import compare, main as compare_main
from inpaint_online.config import ConfigError
from inpaint_online.inference import (
    background_fill,
    choose_fill,
    inpaint,
    load_model,
    render_stereo,
)
from inpaint_online.inpaint import main as inpaint_main
from inpaint_online.stereo import main as stereo_main


def test_inpaint_cli_fills_only_the_holes_of_a_real_image(checkpoint, tmp_path):
    img = Image.open(skimage_data_dir() / "astronaut.png").convert("RGB").resize((301, 203))
    img.save(tmp_path / "a.png")
    mask = np.zeros((203, 301), np.uint8)
    mask[60:120, 100:130] = 255
    mask[150:160, 20:200] = 127                     # iw3's layered-hole value counts as a hole
    Image.fromarray(mask).save(tmp_path / "a_mask.png")
    assert inpaint_main(["--checkpoint", str(checkpoint), "--image", str(tmp_path / "a.png"),
                         "--mask", str(tmp_path / "a_mask.png"), "--output", str(tmp_path / "o.png"),
                         "--device", "cpu"]) == 0
    src, out = np.array(img), np.array(Image.open(tmp_path / "o.png"))
    assert out.shape == src.shape
    assert np.array_equal(out[mask == 0], src[mask == 0])
    assert np.abs(out[mask > 0].astype(int) - src[mask > 0]).mean() < 60   # filled, not black
    assert out[mask > 0].mean() > 20


def test_tiled_inference_matches_whole_image(checkpoint):
    model = load_model(checkpoint)
    x = torch.from_numpy(np.array(Image.open(skimage_data_dir() / "coffee.png").convert("RGB"))
                         ).permute(2, 0, 1)[None].float() / 255
    m = torch.zeros_like(x[:, :1])
    m[..., 100:140, 200:260] = 1
    m[..., 250:300, 50:90] = 1
    whole = inpaint(model, x, m, tile=4096)
    tiled = inpaint(model, x, m, tile=160, overlap=32)
    mse = ((whole - tiled) ** 2).mean()
    assert 10 * torch.log10(1 / mse) > 35
    assert torch.equal(whole * (1 - m), x * (1 - m)) and torch.equal(tiled * (1 - m), x * (1 - m))


def test_inpaint_cli_folder_mode_reads_an_exported_dataset(checkpoint, small_cache, tmp_path):
    from iw3_reader import read_export

    from inpaint_online.export import export_dataset
    export_dataset(tiny_config(small_cache, tmp_path, "collate.min_hole_px=10"), tmp_path / "ex",
                   3, 8, size=256, progress=False)
    assert read_export(tmp_path / "ex") == {"train": 3, "eval": 8}
    d = tmp_path / "ex" / "train"
    assert inpaint_main(["--checkpoint", str(checkpoint), "--image", str(d), "--mask", str(d),
                         "--output", str(tmp_path / "out"), "--device", "cpu"]) == 0
    # an exported target NAME_C.png is filled as NAME_filled.png: never a name read as a target
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(names) == 3 and all(n.endswith("_filled.png") for n in names)
    # writing into the input folder would overwrite an input of the plain kind: refused
    plain = tmp_path / "plain"
    plain.mkdir()
    Image.open(d / names[0].replace("_filled", "_C")).save(plain / "a.png")
    Image.open(d / names[0].replace("_filled", "_M")).save(plain / "a_M.png")
    assert inpaint_main(["--checkpoint", str(checkpoint), "--image", str(plain), "--mask",
                         str(plain), "--output", str(plain), "--device", "cpu"]) == 2


def test_stereo_cli_on_a_real_image_and_its_depth(checkpoint, tmp_path):
    img = Image.open(skimage_data_dir() / "coffee.png").convert("RGB")
    w, h = img.size
    disp = photo_depth("coffee.png")[0, 0].numpy()
    assert disp.shape == (h, w)
    np.save(tmp_path / "disp.npy", disp)
    img.save(tmp_path / "moto.png")
    out = tmp_path / "moto_LR.png"
    assert stereo_main(["--checkpoint", str(checkpoint), "--image", str(tmp_path / "moto.png"),
                        "--depth", str(tmp_path / "disp.npy"), "--divergence", "3", "--convergence", "0.5",
                        "--output", str(out), "--save-views", "--save-masks", "--device", "cpu"]) == 0
    sbs = np.array(Image.open(out))
    assert sbs.shape == (h, 2 * w, 3)
    left, right = np.array(Image.open(tmp_path / "moto_LR_L.png")), np.array(Image.open(tmp_path / "moto_LR_R.png"))
    assert np.array_equal(sbs[:, :w], left) and np.array_equal(sbs[:, w:], right)
    ml = np.array(Image.open(tmp_path / "moto_LR_L_mask.png")) > 0
    mr = np.array(Image.open(tmp_path / "moto_LR_R_mask.png")) > 0
    assert 0.002 < mr.mean() < 0.2 and 0.002 < ml.mean() < 0.2
    assert not np.array_equal(left, right)
    assert right[mr].mean() > 10                    # holes were filled (not left black)


def test_render_stereo_right_view_holes_have_foreground_on_their_left():
    from inpaint_online.warp import forward_warp
    d = photo_depth()[..., :256, :384]
    x = torch.rand(1, 3, *d.shape[-2:])

    class Copy(torch.nn.Module):       # a stand-in net: returns the first guess
        config = None

        def forward(self, x, m, depth=None):
            return x
    out = render_stereo(Copy(), x, d, 10.0, 0.5, closing=None)
    hole = out["right_hole"][0, 0]
    wd, _ = forward_warp(d, d, 10.0, 0.5, "right")
    rows, cols = torch.nonzero(hole[:, 2:-2] & ~hole[:, 1:-3], as_tuple=True)   # hole starts
    cols = cols + 2
    ends = [int(hole[r, c:].long().argmin()) + c for r, c in zip(rows.tolist(), cols.tolist())]
    left_d = wd[0, 0, rows, cols - 1]
    right_d = wd[0, 0, rows, torch.tensor(ends).clamp(max=hole.shape[1] - 1)]
    assert len(ends) > 20 and (left_d > right_d).float().mean() > 0.8


def test_checkpoints_load_weights_only_and_refuse_other_models(checkpoint, tmp_path):
    ck = load_checkpoint(checkpoint)
    bad = dict(ck, model_config=dict(ck["model_config"], channels=12))
    save_checkpoint(tmp_path / "other.pt", {k: v for k, v in bad.items() if k != "format"})
    with pytest.raises(CheckpointError, match="weights do not fit the model config"):
        load_model(tmp_path / "other.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "evil": Evil()}, buf)
    (tmp_path / "evil.pt").write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="refused as unsafe: it holds pickled Python objects"):
        load_model(tmp_path / "evil.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an inpaint_online checkpoint"):
        load_model(tmp_path / "foreign.pt")


def test_clis_report_bad_input_without_a_traceback(checkpoint, tmp_path, capsys):
    assert inpaint_main(["--checkpoint", str(tmp_path / "nope.pt"), "--image", "x", "--mask", "y",
                         "--output", str(tmp_path / "z.png")]) == 2
    assert "nope.pt: no such checkpoint" in capsys.readouterr().err
    img = Image.open(skimage_data_dir() / "camera.png").convert("RGB")
    img.save(tmp_path / "c.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "m.png")
    assert inpaint_main(["--checkpoint", str(checkpoint), "--image", str(tmp_path / "c.png"),
                         "--mask", str(tmp_path / "m.png"), "--output", str(tmp_path / "o.png")]) == 2
    assert "m.png: mask is 10x10 but the image is 512x512" in capsys.readouterr().err
    assert stereo_main(["--checkpoint", str(checkpoint), "--image", str(tmp_path / "c.png"),
                        "--depth", str(tmp_path / "missing.npy"), "--output", str(tmp_path / "s.png")]) == 2
    assert "missing.npy: cannot read map" in capsys.readouterr().err


def test_model_against_baselines_on_held_out_samples(checkpoint, small_cache, capsys):
    res = compare(str(checkpoint), str(small_cache), count=8, device="cpu")
    assert set(res) == {"model", "row interpolation", "background copy", "diffusion", "push-pull",
                        "background push-pull", "opencv telea", "opencv navier-stokes"}
    assert res["model"]["samples"] > 0 and all(np.isfinite(r["psnr_hole"]) for r in res.values())
    # the model starts from its row-interpolation guess and learns a correction on top:
    # after 20 tiny steps it must not have become worse than that guess by much
    assert res["model"]["psnr_hole"] > res["row interpolation"]["psnr_hole"] - 1.0
    assert compare_main(["--checkpoint", str(checkpoint), "--cache-dir", str(small_cache),
                         "--count", "8", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "PSNR in holes" in out and "background copy" in out
    assert re.search(r"^held-out sources: [^;]+; 8 samples, \d+ without any hole \(left out of "
                     r"the scores in holes\)$", out, re.M), out
    print(out)


def test_compare_at_each_divergence_level_draws_the_same_crops_with_wider_holes(checkpoint, small_cache, capsys):
    holes = {}
    for level in (1, 3):
        info: dict = {}
        res = compare(str(checkpoint), str(small_cache), count=8, device="cpu", info=info, level=level)
        holes[level] = info["hole_px"]
        assert res["model"]["samples"] > 0 and info["held_out"]
    assert holes[3] > 1.5 * holes[1]                     # level 3: 6-11 % of the width, level 1: <= 5 %
    assert compare_main(["--checkpoint", str(checkpoint), "--cache-dir", str(small_cache),
                         "--count", "8", "--device", "cpu", "--level", "2"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("; warp level 2")
    with pytest.raises(ConfigError, match="levels are 1, 2 and 3"):
        compare(str(checkpoint), str(small_cache), count=8, device="cpu", level=4)


def test_border_band_and_interior_holes_are_told_apart():
    from inpaint_online.inference import split_border_band
    from inpaint_online.warp import forward_warp
    flat = torch.full((1, 1, 40, 120), 0.8)
    _, hole = forward_warp(flat, flat, 8.0, 0.0, "right")   # a shifted flat plane: edge strip only
    interior, band = split_border_band(hole)
    assert band.any() and not interior.any()
    step = flat.clone()
    step[..., 40:70] = 0.2                                  # far strip: holes behind the near edge
    _, hole = forward_warp(step, step, 8.0, 0.0, "right")
    interior, band = split_border_band(hole)
    assert interior.any() and band.any() and torch.equal(interior | band, hole)
    cols = interior[0, 0].any(0).nonzero()[:, 0]
    assert 30 < int(cols.min()) and int(cols.max()) < 90     # in the middle, by the step
    row = torch.tensor([[1, 1, 0, 1, 0, 1]], dtype=torch.bool)
    i, b = split_border_band(row)
    assert i.tolist() == [[False, False, False, True, False, False]]
    assert b.tolist() == [[True, True, False, False, False, True]]


def test_stereo_saves_depth_and_reports_interior_holes(checkpoint, tmp_path, capsys):
    img = Image.open(skimage_data_dir() / "coffee.png").convert("RGB")
    img.save(tmp_path / "c.png")
    np.save(tmp_path / "d.npy", photo_depth("coffee.png")[0, 0].numpy())
    out = tmp_path / "sbs.png"
    assert stereo_main(["--checkpoint", str(checkpoint), "--image", str(tmp_path / "c.png"),
                        "--depth", str(tmp_path / "d.npy"), "--divergence", "4", "--output", str(out),
                        "--save-depth", "--save-holes", "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    import re
    m = re.match(r"holes filled: left ([\d.]+)% \(([\d.]+)% interior, ([\d.]+)% border band\), "
                 r"right ([\d.]+)% \(([\d.]+)% interior, ([\d.]+)% border band\) of the frame; wrote ", line)
    assert m, line
    lt, li, lb, rt, ri, rb = map(float, m.groups())
    assert li > 0 and ri > 0 and abs(lt - li - lb) < 0.02 and abs(rt - ri - rb) < 0.02
    pic = np.array(Image.open(tmp_path / "sbs_depth.png"))
    assert pic.shape == (400, 600, 3) and (tmp_path / "sbs_R_mask.png").is_file()


def test_compare_sheet_is_labelled_and_shows_holes(checkpoint, small_cache, tmp_path, capsys):
    from inpaint_online.baselines import classical_fills
    from inpaint_online.compare import sheet_columns
    out = tmp_path / "cmp.png"
    assert compare_main(["--checkpoint", str(checkpoint), "--cache-dir", str(small_cache),
                         "--count", "8", "--device", "cpu", "--sheet", str(out),
                         "--sheet-rows", "3"]) == 0
    text = capsys.readouterr().out
    assert text.rstrip().endswith(f"wrote {out}")
    pic = np.array(Image.open(out))
    crop = 48                                    # tiny_config's data.crop
    n = len(sheet_columns(["model", *classical_fills()]))
    assert n == 15                               # 8 methods (OpenCV is a test dependency)
    assert pic.shape == (14 + 3 * (14 + crop + 2) + 2, n * crop + (n + 1) * 2, 3)
    tint = (pic[..., 0] > 180) & (pic[..., 1] < 90) & (pic[..., 2] > 180)
    assert tint[:, 2:2 + crop].any()                                   # input: holes tinted
    assert not tint[:, 2 + crop + 2:2 + 10 * (crop + 2)].any()         # fills and target: none
    assert (pic[:14] < 128).any() and (pic[14:28, :] < 128).any()      # titles and row label
    # a bad --sheet path is refused before any work
    assert compare_main(["--checkpoint", str(checkpoint), "--sheet", str(tmp_path / "x.bmpx")]) == 2
    assert "x.bmpx" in capsys.readouterr().err


def test_stereo_sheet_labels_views_and_zooms_on_interior_holes(checkpoint, tmp_path, capsys):
    from inpaint_online.stereo import SHEET_COLUMNS
    img = Image.open(skimage_data_dir() / "coffee.png").convert("RGB").resize((300, 200))
    img.save(tmp_path / "c.png")
    d = torch.nn.functional.interpolate(photo_depth("coffee.png"), size=(200, 300), mode="area")
    np.save(tmp_path / "d.npy", d[0, 0].numpy())
    out = tmp_path / "sbs.png"
    assert stereo_main(["--checkpoint", str(checkpoint), "--image", str(tmp_path / "c.png"),
                        "--depth", str(tmp_path / "d.npy"), "--divergence", "5", "--output", str(out),
                        "--save-sheet", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"{out}, {tmp_path / 'sbs_sheet.png'}")
    pic = np.array(Image.open(tmp_path / "sbs_sheet.png"))
    n = len(SHEET_COLUMNS)
    assert pic.shape == (14 + 2 * (14 + 200 + 2) + 2, 3 * 300 + 2 * 200 + (n + 1) * 2, 3)  # square zooms
    tint = (pic[..., 0] >= 178) & (pic[..., 1] <= 77) & (pic[..., 2] >= 178)   # 0.3 x + 0.7 magenta
    assert tint[:, 2:302].sum() > 100 and not tint[:, 304:604].any()   # holes, then filled
    assert tint[:, 3 * 302 + 2:4 * 302].any()                          # the zoom shows holes


def test_pushpull_first_guess_keeps_known_pixels_and_fills_smoothly_from_every_side():
    from inpaint_online.baselines import diffusion_fill
    from inpaint_online.models import prefill_holes
    img = torch.from_numpy(np.array(Image.open(skimage_data_dir() / "coffee.png").convert("RGB")
                                    .resize((160, 107)))).permute(2, 0, 1)[None].float() / 255
    mask = torch.zeros(1, 1, 107, 160)
    mask[..., 30:70, 50:90] = 1                                     # a 40x40 hole, odd height
    out = prefill_holes(img * (1 - mask), mask, "pushpull")
    known = mask[0, 0] == 0
    assert torch.equal(out[..., known], img[..., known]) and out.shape == img.shape
    # a constant image is filled exactly; a ramp is followed inside the hole (no blocks)
    flat = torch.full_like(img, 0.3)
    assert torch.allclose(prefill_holes(flat * (1 - mask), mask, "pushpull"), flat, atol=1e-5)
    ramp = torch.linspace(0, 1, 107).view(1, 1, 107, 1).expand(1, 3, 107, 160).contiguous()
    r = prefill_holes(ramp * (1 - mask), mask, "pushpull")
    assert (r - ramp)[..., 30:70, 50:90].abs().mean() < 0.05        # the ramp spans 0.37 here
    # about as good as 300 diffusion iterations on a real photo, in a fraction of the work
    def psnr(a):
        return -10 * torch.log10(((a - img) ** 2)[..., mask[0, 0] > 0].mean())
    assert psnr(out) > psnr(diffusion_fill(img * (1 - mask), mask)) - 0.5
    assert psnr(out) > psnr(prefill_holes(img * (1 - mask), mask, "interp"))
    # more smoothing converges on the harmonic fill (what 300 diffusion iterations approach)
    ref = diffusion_fill(img * (1 - mask), mask, iters=3000)
    gaps = [(prefill_holes(img * (1 - mask), mask, "pushpull", smooth=k) - ref).abs().max()
            for k in (0, 8, 32, 128)]
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps


def test_a_model_starts_as_its_smoothed_first_guess_and_old_checkpoints_keep_8(tmp_path):
    from inpaint_online.models import ModelConfig, build_model, model_config_dict, prefill_holes
    x, m = torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)
    m[..., 8:24, 10:20] = 1
    for k in (0, 8, 32):
        model = build_model(ModelConfig(channels=8, levels=2, blocks=0, dilations=(2,),
                                        prefill_smooth=k)).eval()
        assert torch.allclose(inpaint(model, x, m), prefill_holes(x * (1 - m), m, "pushpull", smooth=k),
                              atol=1e-5)
    assert ModelConfig().prefill_smooth == 32
    with pytest.raises(ValueError, match="prefill_smooth must be >= 0"):
        ModelConfig(prefill_smooth=-1).validate()
    # a checkpoint from before the field: its model smoothed 8 times, and loads so
    raw = model_config_dict(model.config)
    del raw["prefill_smooth"]
    path = tmp_path / "old.pt"
    save_checkpoint(path, {"format": FORMAT, "model": model.state_dict(), "model_config": raw})
    assert load_checkpoint(path)["model_config"]["prefill_smooth"] == 8
    assert load_model(path).config.prefill_smooth == 8


@pytest.mark.skipif(__import__("shutil").which("cc") is None, reason="torch.compile needs a C compiler on CPU")
def test_pushpull_compiles_fullgraph():
    from inpaint_online.models import pushpull_fill
    x, m = torch.rand(2, 3, 37, 50), (torch.rand(2, 1, 37, 50) > 0.7).float()
    assert torch.allclose(torch.compile(pushpull_fill, fullgraph=True)(x, m), pushpull_fill(x, m), atol=1e-5)


def test_background_pushpull_fills_from_the_farther_side_only():
    from inpaint_online.models import background_pushpull_fill, prefill_holes, pushpull_fill
    h, w = 40, 60
    x = torch.zeros(1, 3, h, w)
    x[:, 0] = 0.9                                   # red background (far) ...
    x[:, :, :, 10:30] = torch.tensor([0.1, 0.2, 0.9]).view(1, 3, 1, 1)   # ... a blue occluder
    depth = torch.full((1, 1, h, w), 0.2)
    depth[..., 10:30] = 0.8
    mask = torch.zeros(1, 1, h, w)
    mask[..., 8:32, 30:42] = 1                      # the disocclusion right of the occluder
    depth = depth * (1 - mask)
    bg = background_pushpull_fill(x * (1 - mask), mask, depth)
    red = torch.tensor([0.9, 0.0, 0.0]).view(1, 3, 1, 1)
    hole = mask[0, 0] > 0
    assert (bg - red)[..., hole].abs().max() < 1e-4                  # no blue in the fill
    assert (pushpull_fill(x * (1 - mask), mask) - red)[..., hole].abs().max() > 0.3
    # orientation-free: the mirrored problem gives the mirrored answer
    flip = background_pushpull_fill((x * (1 - mask)).flip(-1), mask.flip(-1), depth.flip(-1))
    assert torch.allclose(flip.flip(-1), bg, atol=1e-5)
    assert torch.equal(prefill_holes(x * (1 - mask), mask, "background", depth), bg)
    with pytest.raises(ValueError, match="model.prefill=background .* pass depth"):
        prefill_holes(x, mask, "background")


def test_a_model_that_fills_from_the_background_needs_depth():
    from inpaint_online.inference import needs_depth
    from inpaint_online.models import ModelConfig, build_model
    model = build_model(ModelConfig(channels=8, levels=2, blocks=0, dilations=(2,), prefill="background")).eval()
    x, m = torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)
    m[..., 10:20, 10:20] = 1
    assert needs_depth(model)
    with pytest.raises(ValueError, match="this model reads depth"):
        inpaint(model, x, m)
    d = torch.rand(1, 1, 32, 32)
    out = inpaint(model, x, m, d)                  # untrained: exactly its first guess
    from inpaint_online.models import background_pushpull_fill
    assert torch.allclose(out, background_pushpull_fill(x * (1 - m), m, d * (1 - m), smooth=32), atol=1e-5)


def test_a_dual_model_blends_the_two_fills_by_its_learned_share():
    """``model.prefill=dual``: given both first guesses, the net's 4th output channel is the
    per-pixel share of the background fill (untrained: half each); it needs depth."""
    from inpaint_online.inference import needs_depth
    from inpaint_online.models import (
        ModelConfig,
        background_pushpull_fill,
        build_model,
        prefill_holes,
        pushpull_fill,
    )
    h, w = 40, 60
    x = torch.zeros(1, 3, h, w)
    x[:, 0] = 0.9
    x[:, :, :, 10:30] = torch.tensor([0.1, 0.2, 0.9]).view(1, 3, 1, 1)
    depth = torch.full((1, 1, h, w), 0.2)
    depth[..., 10:30] = 0.8
    m = torch.zeros(1, 1, h, w)
    m[..., 8:32, 30:42] = 1
    xm, dm = x * (1 - m), depth * (1 - m)
    pp, bg = pushpull_fill(xm, m, 32), background_pushpull_fill(xm, m, dm, smooth=32)
    assert (pp - bg).abs().max() > 0.3               # the two guesses differ in the holes
    model = build_model(ModelConfig(channels=8, levels=2, blocks=0, dilations=(2,), prefill="dual")).eval()
    assert needs_depth(model) and model.head.out_channels == 4
    with pytest.raises(ValueError, match="this model reads depth"):
        inpaint(model, x, m)
    assert torch.allclose(inpaint(model, x, m, depth), 0.5 * (pp + bg), atol=1e-5)
    assert torch.allclose(prefill_holes(xm, m, "dual", dm, 32), 0.5 * (pp + bg), atol=1e-6)
    with torch.no_grad():                            # the share's logit pushed to either end
        for logit, want in ((30.0, bg), (-30.0, pp)):
            model.head.bias[3] = logit
            assert torch.allclose(inpaint(model, x, m, depth), want, atol=1e-5)
    with pytest.raises(ValueError, match="model.prefill=dual .* pass depth"):
        prefill_holes(xm, m, "dual")
    with torch.no_grad():                            # blend=True: the blended fills too
        model.head.bias[3] = 30.0
        model.head.bias[:3] = 0.25                   # a correction on top of the blend
        out, blend = model(xm, m, dm, blend=True)
        assert torch.equal(out, model(xm, m, dm))
        assert torch.allclose(blend, bg, atol=1e-5) and torch.allclose(out, bg + 0.25, atol=1e-5)
    with pytest.raises(ValueError, match="blend=True needs a model built with model.prefill=dual"):
        build_model(ModelConfig(channels=8, levels=2, blocks=0, dilations=(2,)))(xm, m, blend=True)


def test_correction_every_side_leaves_the_background_fill_alone_where_the_share_is_1():
    """``model.correction: every_side``: the net's RGB correction goes to the every-side fill
    before the blend, so a share of 1 gives the background fill itself (with ``all`` the
    correction is added on top); a share of 0 gives the corrected every-side fill; the
    untrained model is the same half-each blend; the blend itself is unchanged."""
    from inpaint_online.models import (
        ModelConfig,
        background_pushpull_fill,
        build_model,
        pushpull_fill,
    )
    torch.manual_seed(0)
    x, m = torch.rand(2, 3, 40, 48), (torch.rand(2, 1, 40, 48) < 0.2).float()
    d = torch.rand(2, 1, 40, 48) * (1 - m)
    xm, dm = x * (1 - m), d * (1 - m)
    pp, bg = pushpull_fill(xm, m, 32), background_pushpull_fill(xm, m, dm, smooth=32)
    cfg = dict(channels=8, levels=2, blocks=0, dilations=(2,), prefill="dual")
    models = {c: build_model(ModelConfig(**cfg, correction=c)).eval() for c in ("all", "every_side")}
    with torch.no_grad():
        assert torch.equal(models["all"](xm, m, dm), models["every_side"](xm, m, dm))   # half each
        for model in models.values():
            model.head.bias[:3] = 0.25
        for logit, want in ((30.0, {"all": bg + 0.25, "every_side": bg}),
                            (-30.0, {"all": pp + 0.25, "every_side": pp + 0.25})):
            for c, model in models.items():
                model.head.bias[3] = logit
                out, blend = model(xm, m, dm, blend=True)
                assert torch.allclose(out, want[c], atol=1e-5), (c, logit)
                assert torch.allclose(blend, bg if logit > 0 else pp, atol=1e-5)
    with pytest.raises(ValueError, match="model.correction every_side .* needs model.prefill=dual"):
        ModelConfig(correction="every_side").validate()
    with pytest.raises(ValueError, match="model.correction must be all or every_side, got 'some'"):
        ModelConfig(prefill="dual", correction="some").validate()


def test_share_floor_hands_rows_with_an_occluder_to_the_background_fill():
    """``model.share_floor``: where a hole's row has known pixels on both sides farther apart
    in depth than the floor (over the sample's maximum), the share is 1 — with
    ``correction: every_side`` the output there is the background fill itself, whatever the
    net says; holes between near-equal depths and rows known on one side only keep the
    learned share; the blend ``loss.blend_l1`` scores is the learned one everywhere (the net
    still learns its share where the floor decides). Checked against the rule per pixel."""
    from inpaint_online.models import (
        ModelConfig,
        background_pushpull_fill,
        build_model,
        pushpull_fill,
        row_step,
    )
    torch.manual_seed(0)
    h, w = 32, 64
    x = torch.rand(1, 3, h, w)
    depth = torch.full((1, 1, h, w), 0.3)
    depth[..., :, 8:24] = 1.0                        # an object far in front
    depth[..., :, 40:] = 0.4                         # a small step in the background
    m = torch.zeros(1, 1, h, w)
    m[..., 4:12, 24:34] = 1                          # right of the object: occluder on the left
    m[..., 16:24, 36:44] = 1                         # across the small step: same surface
    m[..., 26:30, 58:] = 1                           # open to the right edge: one side known
    xm, dm = x * (1 - m), depth * (1 - m)
    step = row_step(m, dm)
    hole = m[0, 0] > 0.5
    for y, xx in hole.nonzero().tolist():            # the rule, pixel by pixel
        row = hole[y]
        lft = [i for i in range(xx) if not row[i]]
        rgt = [i for i in range(xx + 1, w) if not row[i]]
        want = abs(float(dm[0, 0, y, lft[-1]] - dm[0, 0, y, rgt[0]])) if lft and rgt else 0.0
        assert abs(float(step[0, 0, y, xx]) - want) < 1e-6
    assert float(step[~m.bool()].abs().max()) == 0.0
    pp, bg = pushpull_fill(xm, m, 32), background_pushpull_fill(xm, m, dm, smooth=32)
    cfg = dict(channels=8, levels=2, blocks=0, dilations=(2,), prefill="dual", correction="every_side")
    model = build_model(ModelConfig(**cfg, share_floor=0.5)).eval()
    with torch.no_grad():
        model.head.bias[:3] = 0.25                   # a correction the floor must not let in
        out, blend = model(xm, m, dm, blend=True)
    # the blend loss.blend_l1 scores is the net's own choice everywhere, floor or not
    assert torch.allclose(blend, 0.5 * (pp + bg), atol=1e-6)
    gated = (step > 0.5).expand_as(out)
    assert int(gated[:, 0].sum()) == 8 * 10          # the first hole only
    assert torch.allclose(out[gated], bg[gated], atol=1e-6)
    rest = (m > 0.5).expand_as(out) & ~gated
    assert torch.allclose(out[rest], (0.5 * (pp + 0.25) + 0.5 * bg)[rest], atol=1e-5)
    with pytest.raises(ValueError, match="model.share_floor .* needs model.prefill=dual"):
        ModelConfig(share_floor=0.5).validate()
    with pytest.raises(ValueError, match=r"model.share_floor must be in \[0, 1\], got 1.5"):
        ModelConfig(prefill="dual", share_floor=1.5).validate()


def test_depth_norm_makes_the_depth_input_independent_of_the_maps_scale():
    """``model.depth_norm``: the depth channel divided by its maximum per sample (per clip for
    clips), so a map at another scale gives the same fill; without it the fill moves."""
    from inpaint_online.models import ModelConfig, build_model
    torch.manual_seed(0)
    cfg = dict(channels=8, levels=2, blocks=0, dilations=(2,), prefill="dual", use_depth=True)
    x, m = torch.rand(2, 3, 40, 48), (torch.rand(2, 1, 40, 48) < 0.2).float()
    d = torch.rand(2, 1, 40, 48) * (1 - m)
    scaled = d * torch.tensor([0.7, 0.4]).view(2, 1, 1, 1)      # each sample its own scale
    outs = {}
    for norm in (False, True):
        torch.manual_seed(1)
        model = build_model(ModelConfig(**cfg, depth_norm=norm)).eval()
        with torch.no_grad():
            for p in model.parameters():                         # a net that reads its input
                p.normal_(0, 0.2)
            outs[norm] = model(x * (1 - m), m, d), model(x * (1 - m), m, scaled)
    assert torch.allclose(*outs[True], atol=1e-5)
    assert (outs[False][0] - outs[False][1]).abs().max() > 1e-2
    clip_model = build_model(ModelConfig(kind="temporal_unet", **cfg, depth_norm=True)).eval()
    with torch.no_grad():
        for p in clip_model.parameters():
            p.normal_(0, 0.2)
        xc, mc = torch.rand(1, 3, 3, 32, 32), (torch.rand(1, 3, 1, 32, 32) < 0.2).float()
        dc = torch.rand(1, 3, 1, 32, 32)
        dc[:, 1] *= 0.5                                          # one frame farther than the rest
        a, b = clip_model(xc * (1 - mc), mc, dc), clip_model(xc * (1 - mc), mc, dc * 0.6)
        assert torch.allclose(a, b, atol=1e-5)
        # per clip, not per frame: the farther frame keeps its place in the clip's range
        flat = dc.clone()
        flat[:, 1] /= 0.5
        assert (clip_model(xc * (1 - mc), mc, flat) - a).abs().max() > 1e-2
    with pytest.raises(ValueError, match="model.depth_norm .* needs model.use_depth=true"):
        ModelConfig(depth_norm=True).validate()


@pytest.mark.skipif(__import__("shutil").which("cc") is None, reason="torch.compile needs a C compiler on CPU")
def test_a_dual_model_compiles_fullgraph_and_runs_on_clips():
    from inpaint_online.models import ModelConfig, build_model
    cfg = dict(channels=8, levels=2, blocks=0, dilations=(2,), prefill="dual")
    # with the floor and the every-side correction too (row look-ups: cummax, gather)
    model = build_model(ModelConfig(**cfg, use_depth=True, correction="every_side", share_floor=0.3)).eval()
    x, m, d = torch.rand(2, 3, 40, 48), (torch.rand(2, 1, 40, 48) < 0.2).float(), torch.rand(2, 1, 40, 48)
    with torch.no_grad():
        for p in model.parameters():                 # a net whose share and correction vary
            p.normal_(0, 0.2)
        assert torch.allclose(torch.compile(model, fullgraph=True)(x * (1 - m), m, d),
                              model(x * (1 - m), m, d), atol=1e-5)
    clip_model = build_model(ModelConfig(kind="temporal_unet", **cfg))
    xc, mc = torch.rand(1, 3, 3, 32, 32), (torch.rand(1, 3, 1, 32, 32) < 0.2).float()
    dc = torch.rand(1, 3, 1, 32, 32)
    assert clip_model(xc * (1 - mc), mc, dc).shape == xc.shape
    out, blend = clip_model(xc * (1 - mc), mc, dc, blend=True)
    assert out.shape == blend.shape == xc.shape


def test_fill_auto_takes_whichever_the_validation_scored_higher():
    best = {"metric": "psnr_hole", "value": 30.0, "step": 100, "latest": {"step": 200, "value": 29.0},
            "ema_value": 31.0, "ema_step": 150,
            "classical_scores": {"background push-pull": 29.5, "diffusion": 28.0}}
    assert choose_fill("auto", {"step": 100, "best": best})[0] == "model"          # best.pt
    kind, line = choose_fill("auto", {"step": 200, "best": best})                   # last.pt
    assert kind == "background" and line == (
        "fill: background (--fill auto: on the run's held-out samples the model scored "
        "psnr_hole 29.00 dB, the background push-pull fill 29.50 dB)")
    assert choose_fill("auto", {"step": 150, "best": best, "weights": "ema"})[0] == "model"
    # a step that was not validated, an old checkpoint, a nunif file: the model, said so
    for data in ({"step": 120, "best": best}, {"step": 100, "best": {"value": 1.0, "step": 100}},
                 {"name": "InpaintLightV1", "state_dict": {}}):
        kind, line = choose_fill("auto", data)
        assert kind == "model" and "carries no validation score" in line
    assert choose_fill("background", None)[0] == "background"


def test_background_fill_takes_the_side_the_view_puts_behind():
    """Left half dark, right half bright, a hole on the boundary: a right view's background is
    right of the hole (bright), a left view's left of it (dark); with depth, the farther side."""
    x = torch.zeros(1, 3, 32, 64)
    x[..., 32:] = 1.0
    m = torch.zeros(1, 1, 32, 64)
    m[..., 24:40] = 1
    hole = m[0, 0] > 0
    right = background_fill(x, m, view="right")[0, :, hole]
    left = background_fill(x, m, view="left")[0, :, hole]
    assert right.mean() > 0.9 and left.mean() < 0.1
    near_right = torch.zeros(1, 1, 32, 64)
    near_right[..., 32:] = 1.0                    # the bright side is near: fill from the dark
    assert background_fill(x, m, near_right)[0, :, hole].mean() < 0.1
    assert torch.equal(background_fill(x, m)[..., ~hole], x[..., ~hole])


def test_stereo_and_inpaint_run_the_background_fill_without_a_model(checkpoint, tmp_path, capsys):
    img = Image.open(skimage_data_dir() / "coffee.png").convert("RGB")
    np.save(tmp_path / "disp.npy", photo_depth("coffee.png")[0, 0].numpy())
    img.save(tmp_path / "c.png")
    base = ["--image", str(tmp_path / "c.png"), "--depth", str(tmp_path / "disp.npy"),
            "--divergence", "3", "--device", "cpu", "--save-views"]
    assert stereo_main([*base, "--fill", "background", "--output", str(tmp_path / "bg.png")]) == 0
    assert "stereo: fill: background (--fill background)" in capsys.readouterr().out
    assert stereo_main([*base, "--output", str(tmp_path / "m.png")]) == 2       # no checkpoint
    assert "--checkpoint is required (or --fill background: no model)" in capsys.readouterr().err
    assert stereo_main([*base, "--checkpoint", str(checkpoint), "--output",
                        str(tmp_path / "auto.png")]) == 0
    out = capsys.readouterr().out
    assert "stereo: fill: model (--fill auto: on the run's held-out samples the model scored" in out
    a, b = np.array(Image.open(tmp_path / "bg.png")), np.array(Image.open(tmp_path / "auto.png"))
    assert a.shape == b.shape and not np.array_equal(a, b)
    mask = np.zeros(img.size[::-1], np.uint8)
    mask[100:140, 200:230] = 255
    Image.fromarray(mask).save(tmp_path / "c_M.png")
    assert inpaint_main(["--image", str(tmp_path / "c.png"), "--mask", str(tmp_path / "c_M.png"),
                         "--output", str(tmp_path / "f.png"), "--fill", "background"]) == 0
    f, src = np.array(Image.open(tmp_path / "f.png")), np.array(img)
    assert np.array_equal(f[mask == 0], src[mask == 0]) and not np.array_equal(f, src)


def test_stereo_sheet_of_a_large_photo_stays_small_and_says_when_there_are_no_holes(tmp_path, capsys):
    img = Image.open(skimage_data_dir() / "coffee.png").convert("RGB").resize((1600, 1066))
    img.save(tmp_path / "big.png")
    d = torch.nn.functional.interpolate(photo_depth("coffee.png"), size=(1066, 1600), mode="bilinear")
    np.save(tmp_path / "d.npy", d[0, 0].numpy())
    base = ["--image", str(tmp_path / "big.png"), "--depth", str(tmp_path / "d.npy"),
            "--fill", "background", "--save-sheet", "--device", "cpu", "--quiet"]
    assert stereo_main([*base, "--divergence", "4", "--output", str(tmp_path / "a.png")]) == 0
    pic = np.array(Image.open(tmp_path / "a_sheet.png"))
    # whole views at most 960 px wide, zooms of a 240-px window enlarged twice: not 18000 px
    assert pic.shape[1] == 3 * 960 + 2 * 480 + 6 * 2 and pic.shape[0] < 2 * (640 + 16) + 20
    assert stereo_main([*base, "--divergence", "0", "--output", str(tmp_path / "z.png")]) == 0
    capsys.readouterr()
    from inpaint_online.inference import render_stereo
    from inpaint_online.stereo import stereo_sheet
    x = torch.rand(1, 3, 64, 96)
    out = render_stereo(None, x, torch.full((1, 1, 64, 96), 0.5), 0.0, 0.5, fill="background")
    labels = [label for label, _ in stereo_sheet(out, np.zeros((64, 96), np.float32), 0.0, 0.5)]
    assert all(label.endswith("; no holes at all") for label in labels)

import pytest
import torch
import torch.nn.functional as F

from inpaint_online.warp import (close_mask, disparity_shift, fill_from_background,
                                 forward_warp, occlusion_mask)
from inpaint_online.warp_reference import (reference_close_mask, reference_forward_warp,
                                           reference_occlusion_mask)

from conftest import real_image, requires_cuda

MODES = ["nearest", "bilinear"]


def step_depth(h=48, w=128, bg=0.2, fg=0.9, top=12, bottom=36, left=40, right=80):
    """Near rectangle (rows top..bottom-1, cols left..right-1) on a far background."""
    d = torch.full((1, 1, h, w), bg)
    d[..., top:bottom, left:right] = fg
    return d


def random_depth(b, h, w, gen):
    """Smooth random depth with a few hard steps: both stretching and occlusions."""
    d = torch.rand(b, 1, h, w, generator=gen)
    d = F.avg_pool2d(d, (3, 7), 1, (1, 3), count_include_pad=False)
    steps = (torch.rand(b, 1, 1, w, generator=gen) < 0.08).float().cumsum(-1)
    d = d + 0.35 * torch.remainder(steps, 2)
    lo = d.amin(dim=(2, 3), keepdim=True)
    hi = d.amax(dim=(2, 3), keepdim=True)
    return (d - lo) / (hi - lo)


def runs(row):
    """(start, end_exclusive) of the True runs of a 1-D bool tensor."""
    out, start = [], None
    for i, v in enumerate(row.tolist() + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i))
            start = None
    return out


# ------------------------------------------------------------------ shift convention

def test_shift_formula_matches_iw3_meaning():
    d = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3)
    s = disparity_shift(d, divergence=2.0, convergence=0.5, width=1000)
    # (d - 0.5) * 2/100 * 1000/2
    assert s.flatten().tolist() == pytest.approx([-5.0, 0.0, 5.0])


def test_left_view_moves_near_content_right_and_right_view_left():
    d = torch.zeros(1, 1, 4, 64)
    img = torch.zeros(1, 1, 4, 64)
    d[..., 30] = 1.0
    img[..., 30] = 1.0
    # shift of the near column: (1 - 0) * 10/100 * 64/2 = 3.2 -> nearest: 3
    left, _ = forward_warp(img, d, 10.0, 0.0, "left", mode="nearest")
    right, _ = forward_warp(img, d, 10.0, 0.0, "right", mode="nearest")
    assert left[0, 0, 0].argmax().item() == 33
    assert right[0, 0, 0].argmax().item() == 27


def test_warp_is_identity_when_depth_is_on_the_screen_plane():
    img = real_image()[..., :64, :96]
    d = torch.full((1, 1, 64, 96), 0.4)
    for mode in MODES:
        out, hole = forward_warp(img, d, 5.0, 0.4, "left", mode=mode)
        assert not hole.any()
        assert torch.equal(out, img)


def test_integer_images_keep_their_dtype():
    img = (real_image()[..., :32, :48] * 255).to(torch.uint8)
    d = torch.rand(1, 1, 32, 48)
    out, _ = forward_warp(img, d, 3.0, 0.5, "right", fill="background")
    assert out.dtype == torch.uint8


# ------------------------------------------------------------------ mask invariants

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("view", ["left", "right"])
def test_zero_divergence_gives_no_holes(disparity, mode, view):
    m = occlusion_mask(disparity, 0.0, 0.5, view, mode=mode, border="none")
    assert not m.any()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("conv", [0.0, 0.3, 1.0])
def test_constant_depth_gives_no_holes_with_border_padding(mode, conv):
    d = torch.full((2, 1, 40, 100), 0.8)
    m = occlusion_mask(d, 6.0, conv, ["left", "right"], mode=mode, border="pad")
    assert not m.any()


def test_constant_depth_without_padding_leaves_only_the_border_band():
    # shift = (1 - 0) * 4/100 * 100/2 = 2 px
    d = torch.ones(2, 1, 10, 100)
    m = occlusion_mask(d, 4.0, 0.0, ["right", "left"], closing=None, border="none")
    cols_right = m[0, 0].any(dim=0).nonzero().flatten().tolist()
    cols_left = m[1, 0].any(dim=0).nonzero().flatten().tolist()
    assert cols_right == [98, 99]
    assert cols_left == [0, 1]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("conv", [0.2, 0.55])
@pytest.mark.parametrize("div", [6.0, 10.0])
def test_step_edge_hole_band_on_background_side_with_width_of_disparity_jump(mode, conv, div):
    h, w, top, bottom, left, right = 48, 128, 12, 36, 40, 80
    d = step_depth(h, w, 0.2, 0.9, top, bottom, left, right)
    jump = (0.9 - 0.2) * div / 100 * w / 2
    for view in ["right", "left"]:
        m = occlusion_mask(d, div, conv, view, closing=None, mode=mode)[0, 0]
        assert not m[:top].any() and not m[bottom:].any()
        # nearest splats put the band exactly at the edge; bilinear ones may reach up to
        # one pixel past it (a splat covers part of the next pixel)
        slack = 0 if mode == "nearest" else 1
        for y in range(top, bottom):
            (start, end), = runs(m[y])
            if view == "right":
                # foreground on the left of the hole, background on its right
                assert right <= start <= right + slack, (y, start)
            else:
                assert left - slack <= end <= left, (y, end)
            assert abs((end - start) - jump) <= 1.0, (view, y, start, end, jump)


def test_hole_is_on_background_side_on_real_depth(disparity):
    d = disparity
    m = occlusion_mask(d, 3.0, 0.5, "right", closing=None)[0, 0]
    dd = d[0, 0]
    fg_left = total = 0
    for y in range(0, m.shape[0], 4):
        for start, end in runs(m[y]):
            if end - start < 2 or start == 0 or end >= m.shape[1]:
                continue
            total += 1
            # the occluder lies within a few px to the left (a bilinear band may start a
            # pixel past the edge); the pixels right after the hole are background
            fg_left += bool(dd[y, max(start - 6, 0):start].max() > dd[y, end:end + 3].max())
    assert total > 100
    # the rest sit in narrow background gaps with foreground on both sides
    assert fg_left / total > 0.93, (fg_left, total)


def test_holes_only_next_to_depth_discontinuities(disparity):
    d = disparity
    div, conv = 3.0, 0.5
    m = occlusion_mask(d, div, conv, "right", closing=None)
    s = disparity_shift(d, div, conv)
    # a shift jump of more than 0.5 px between horizontal neighbours is a discontinuity
    jump = (s[..., 1:] - s[..., :-1]).abs() > 0.5
    jump = F.pad(jump.float(), (0, 1))
    reach = int(s.abs().max().ceil()) * 2 + 2
    near_edge = F.max_pool2d(jump, (1, 2 * reach + 1), 1, (0, reach)) > 0
    assert m.any()
    assert not (m & ~near_edge).any()


@pytest.mark.parametrize("mode", MODES)
def test_left_view_is_the_mirror_of_the_right_view(disparity, mode):
    d = disparity[..., :200, :300]
    right = occlusion_mask(d, 4.0, 0.3, "right", mode=mode)
    left_of_flipped = occlusion_mask(d.flip(-1), 4.0, 0.3, "left", mode=mode)
    assert right.any()
    assert torch.equal(left_of_flipped.flip(-1), right)


def test_bilinear_splatting_leaves_fewer_false_holes_than_nearest(disparity):
    nearest = occlusion_mask(disparity, 2.0, 0.5, "right", closing=None, mode="nearest")
    bilinear = occlusion_mask(disparity, 2.0, 0.5, "right", closing=None, mode="bilinear")
    frac_n, frac_b = nearest.float().mean().item(), bilinear.float().mean().item()
    # the real disocclusions of this scene at 2 % divergence cover about 1 % of the frame
    assert 0.003 < frac_b < frac_n
    assert frac_b < 0.03


# ------------------------------------------------------------------ batched == reference

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fill", [None, "background"])
def test_batched_forward_warp_equals_per_pixel_reference(mode, fill):
    gen = torch.Generator().manual_seed(1)
    b, h, w = 4, 5, 48
    d = random_depth(b, h, w, gen)
    img = torch.rand(b, 3, h, w, generator=gen)
    div = torch.tensor([3.0, 8.0, 12.0, 20.0])
    conv = torch.tensor([0.0, 0.5, 1.0, 0.37])
    views = ["left", "right", "right", "left"]
    out, hole = forward_warp(img, d, div, conv, views, mode=mode, fill=fill)
    ref, ref_hole = reference_forward_warp(img, d, div, conv, views, mode=mode, fill=fill)
    assert hole.any()
    assert torch.equal(hole, ref_hole)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("border", ["pad", "none"])
def test_batched_occlusion_mask_equals_per_pixel_reference(mode, border):
    gen = torch.Generator().manual_seed(2)
    b, h, w = 4, 6, 40
    d = random_depth(b, h, w, gen)
    div = torch.tensor([4.0, 9.0, 15.0, 0.0])
    conv = torch.tensor([0.1, 0.5, 0.9, 0.5])
    views = ["right", "left", "right", "left"]
    for closing in [None, (3, 5)]:
        m = occlusion_mask(d, div, conv, views, closing=closing, mode=mode, border=border,
                           width=w * 1.5)
        ref = reference_occlusion_mask(d, div, conv, views, closing=closing, mode=mode,
                                       border=border, width=w * 1.5)
        assert m.any()
        assert torch.equal(m, ref)


def test_per_sample_parameters_equal_running_each_sample_alone(disparity):
    d = F.interpolate(disparity, (96, 144), mode="bilinear", align_corners=False)
    d = torch.cat([d, d.flip(-1), 1 - d, d.pow(2)])
    div = torch.tensor([1.0, 3.0, 5.0, 8.0])
    conv = torch.tensor([0.0, 1.0, 0.5, 0.25])
    views = ["right", "left", "left", "right"]
    width = torch.tensor([144.0, 300.0, 144.0, 500.0])
    batched = occlusion_mask(d, div, conv, views, width=width, max_shift=40)
    for i in range(4):
        alone = occlusion_mask(d[i:i + 1], div[i].item(), conv[i].item(), views[i],
                               width=width[i].item(), max_shift=40)
        assert torch.equal(batched[i:i + 1], alone)


# ------------------------------------------------------------------ closing and fill

def test_closing_equals_reference_and_fills_one_pixel_cracks():
    gen = torch.Generator().manual_seed(3)
    m = torch.rand(2, 1, 12, 20, generator=gen) < 0.2
    for k in [(3, 3), (3, 5), (5, 5)]:
        assert torch.equal(close_mask(m, k), reference_close_mask(m, k))
    crack = torch.zeros(1, 1, 9, 12, dtype=torch.bool)
    crack[..., 2:7, 2:5] = True
    crack[..., 2:7, 6:9] = True   # a 1-px gap at column 5
    closed = close_mask(crack, 3)
    assert closed[..., 2:7, 5].all()
    assert closed.sum() == 5 * 7


def test_closing_rejects_even_kernels():
    with pytest.raises(ValueError, match="odd"):
        close_mask(torch.zeros(1, 1, 4, 4, dtype=torch.bool), (4, 3))


def test_fill_from_background_takes_the_farther_neighbour():
    vals = torch.tensor([[1.0, 1.0, 0.0, 0.0, 5.0, 5.0]]).view(1, 1, 1, 6)
    key = torch.tensor([[0.9, 0.9, 0.0, 0.0, 0.1, 0.1]]).view(1, 1, 1, 6)
    hole = torch.tensor([[False, False, True, True, False, False]]).view(1, 1, 1, 6)
    out = fill_from_background(vals, hole, key)
    assert out.flatten().tolist() == [1.0, 1.0, 5.0, 5.0, 5.0, 5.0]


# ------------------------------------------------------------------ input hygiene

def test_bad_inputs_give_clear_errors():
    d = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="NaN"):
        occlusion_mask(torch.full((1, 1, 8, 8), float("nan")), 2.0, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        occlusion_mask(d * 3, 2.0, 0.5)
    with pytest.raises(ValueError, match="floating point"):
        occlusion_mask((d * 255).to(torch.uint8), 2.0, 0.5)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        occlusion_mask(torch.rand(8, 8), 2.0, 0.5)
    with pytest.raises(ValueError, match="share"):
        forward_warp(torch.rand(1, 3, 8, 9), d, 2.0, 0.5, "left")
    with pytest.raises(ValueError, match="view"):
        occlusion_mask(d, 2.0, 0.5, "up")
    with pytest.raises(ValueError, match="divergence"):
        occlusion_mask(d, torch.tensor([1.0, 2.0]), 0.5)
    with pytest.raises(ValueError, match="mode"):
        occlusion_mask(d, 2.0, 0.5, mode="cubic")


def test_unchecked_depth_is_normalised_instead_of_rejected():
    d = torch.rand(1, 1, 8, 16)
    bad = d.clone()
    bad[..., 0, 0] = float("nan")
    bad[..., 1, 1] = 7.0
    m = occlusion_mask(bad, 3.0, 0.5, check=False)
    assert m.shape == (1, 1, 8, 16)


@requires_cuda
def test_cuda_matches_cpu(disparity):
    d = disparity[..., :128, :256]
    div = torch.tensor([2.0, 5.0])
    dd = d.repeat(2, 1, 1, 1)
    cpu = occlusion_mask(dd, div, 0.5, ["left", "right"])
    gpu = occlusion_mask(dd.cuda(), div.cuda(), 0.5, ["left", "right"], max_shift=32)
    assert torch.equal(cpu, gpu.cpu())

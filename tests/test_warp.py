import math

import pytest
import torch
import torch.nn.functional as F
from conftest import real_image, requires_cuda

from inpaint_online.warp import (
    MASK_METHODS,
    close_mask,
    disparity_shift,
    fill_from_background,
    forward_warp,
    occlusion_mask,
)
from inpaint_online.warp.reference import (
    reference_close_mask,
    reference_forward_warp,
    reference_geometric_mask,
    reference_iw3_mask,
)

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


# ------------------------------------------------------------------ mask invariants (both methods)

def row(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1)


def cols(mask) -> list[int]:
    """Columns set in a one-row mask."""
    return torch.nonzero(mask[0, 0, 0]).flatten().tolist()


@pytest.mark.parametrize("method", MASK_METHODS)
@pytest.mark.parametrize("view", ["left", "right"])
def test_zero_divergence_gives_no_holes(depth_map, method, view):
    border = "none" if method == "geometric" else "pad"
    m = occlusion_mask(depth_map, 0.0, 0.5, view, method=method, border=border)
    assert not m.any()


@pytest.mark.parametrize("method", MASK_METHODS)
@pytest.mark.parametrize("conv", [0.0, 0.3, 1.0])
def test_constant_depth_gives_no_holes_with_border_padding(method, conv):
    d = torch.full((2, 1, 40, 100), 0.8)
    m = occlusion_mask(d, 6.0, conv, ["left", "right"], method=method, border="pad")
    assert not m.any()


def test_constant_depth_without_padding_leaves_only_the_border_band():
    # shift = (1 - 0) * 4/100 * 100/2 = 2 px: the right view's last two columns land
    # outside the left view's frame (and the mirror for the left view)
    d = torch.ones(2, 1, 10, 100)
    m = occlusion_mask(d, 4.0, 0.0, ["right", "left"], closing=None, border="none")
    assert m[0, 0].any(dim=0).nonzero().flatten().tolist() == [98, 99]
    assert m[1, 0].any(dim=0).nonzero().flatten().tolist() == [0, 1]


@pytest.mark.parametrize("conv", [0.2, 0.55])
@pytest.mark.parametrize("div", [6.0, 10.0])
def test_geometric_band_sits_on_the_background_side_and_is_as_wide_as_the_jump(conv, div):
    h, w, top, bottom, left, right = 48, 128, 12, 36, 40, 80
    d = step_depth(h, w, 0.2, 0.9, top, bottom, left, right)
    jump = (0.9 - 0.2) * div / 100 * w / 2
    width = math.ceil(jump - 0.5)       # background pixels x with x < edge - 0.5 + jump
    for view in ["right", "left"]:
        m = occlusion_mask(d, div, conv, view, closing=None)[0, 0]
        assert not m[:top].any() and not m[bottom:].any()
        for y in range(top, bottom):
            (start, end), = runs(m[y])
            if view == "right":      # foreground on the left of the hole, background on its right
                assert (start, end) == (right, right + width), (y, start, end, jump)
            else:
                assert (start, end) == (left - width, left), (y, start, end, jump)


def test_iw3_band_on_a_hard_step_lies_on_the_background_side_but_is_fragmented():
    # iw3's masks on a hard step, checked against nunif's own nonwarp_mask: its step-1
    # blend leaves in-between depths that warp back into the band, so the band is broken
    # and depends on the sub-pixel phase (a 2.7-px jump can give no hole at all)
    w, edge = 128, 80
    d = torch.full((1, 1, 1, w), 0.2)
    d[..., 40:edge] = 0.9
    seen = {}
    for div, conv in [(6.0, 0.0), (6.0, 0.4), (10.0, 0.4), (10.0, 1.0)]:
        jump = 0.7 * div / 100 * w / 2
        got = cols(occlusion_mask(d, div, conv, "right", closing=None, method="iw3"))
        assert all(edge <= x <= edge + math.ceil(jump) for x in got), (div, conv, got)
        seen[(div, conv)] = got
    assert seen == {(6.0, 0.0): [82], (6.0, 0.4): [], (10.0, 0.4): [80, 81, 84],
                    (10.0, 1.0): [82, 83, 84]}


@pytest.mark.parametrize("method", MASK_METHODS)
def test_hole_is_on_background_side_on_real_depth(depth_map, method):
    d = depth_map
    m = occlusion_mask(d, 10.0, 0.5, "right", closing=None, method=method)[0, 0]
    dd = d[0, 0]
    fg_left = total = 0
    for y in range(0, m.shape[0], 2):
        for start, end in runs(m[y]):
            if start < 6 or end + 3 >= m.shape[1]:
                continue
            total += 1
            # the occluder lies within a few px to the left, background right after the hole
            fg_left += bool(dd[y, start - 6:start].max() > dd[y, end:end + 3].max())
    assert total > 40, total
    assert fg_left / total > 0.9, (fg_left, total)


@pytest.mark.parametrize("method", MASK_METHODS)
def test_holes_only_next_to_depth_discontinuities(depth_map, method):
    d = depth_map
    div, conv = 6.0, 0.5
    m = occlusion_mask(d, div, conv, "right", closing=None, method=method)
    s = disparity_shift(d, div, conv)
    # a shift step of more than 0.5 px between horizontal neighbours is a discontinuity
    jump = (s[..., 1:] - s[..., :-1]).abs() > 0.5
    jump = F.pad(jump.float(), (0, 1))
    reach = int(s.abs().max().ceil()) * 2 + 2
    near_edge = F.max_pool2d(jump, (1, 2 * reach + 1), 1, (0, reach)) > 0
    assert m.any()
    assert not (m & ~near_edge).any()


@pytest.mark.parametrize("method", MASK_METHODS)
def test_left_view_is_the_mirror_of_the_right_view(depth_map, method):
    d = depth_map[..., :200, :300]
    right, lay_r = occlusion_mask(d, 12.0, 0.3, "right", method=method, return_layered=True)
    left, lay_l = occlusion_mask(d.flip(-1), 12.0, 0.3, "left", method=method, return_layered=True)
    assert right.any()
    assert torch.equal(left.flip(-1), right)
    assert torch.equal(lay_l.flip(-1), lay_r)


# ------------------------------------------------------------------ geometric == its definition

def piecewise_depth(b, h, w, gen):
    """Flat layers with hard steps, thin stripes included (random widths 1-12 px)."""
    widths = torch.randint(1, 13, (b, h, w), generator=gen).float()
    edges = torch.cumsum(widths, -1)
    x = torch.arange(w).float()
    seg = (x.view(1, 1, w, 1) >= edges.unsqueeze(2)).sum(-1)           # segment id per pixel
    levels = torch.rand(b, h, w + 1, generator=gen)
    return levels.gather(2, seg.clamp(max=w)).unsqueeze(1)


@pytest.mark.parametrize("border", ["pad", "none"])
def test_geometric_equals_its_per_pixel_definition(border):
    gen = torch.Generator().manual_seed(2)
    b, h, w = 4, 6, 48
    div = torch.tensor([4.0, 9.0, 15.0, 0.0])
    conv = torch.tensor([0.1, 0.5, 0.9, 0.5])
    views = ["right", "left", "right", "left"]
    for d in (random_depth(b, h, w, gen), piecewise_depth(b, h, w, gen)):
        m = occlusion_mask(d, div, conv, views, closing=None, border=border, width=w * 1.5)
        ref = reference_geometric_mask(d, div, conv, views, border=border, width=w * 1.5)
        assert m.any()
        assert torch.equal(m, ref)


def test_geometric_is_exact_on_step_edges_at_subpixel_phases():
    # a near step on a far background, its jump swept through sub-pixel phases: the band
    # is exactly the background pixels x with x < edge - 0.5 + jump (a jump >= 1 px)
    w, edge = 64, 30
    for i in range(41):
        jump = 1.05 + i * 0.2
        fg = jump / (40.0 / 100 * w / 2)                  # depth giving that jump at div 40
        d = row([fg] * edge + [0.0] * (w - edge))
        m = occlusion_mask(d, 40.0, 0.0, "right", closing=None)
        assert cols(m) == list(range(edge, edge + math.ceil(jump - 0.5))), jump
        assert torch.equal(m, reference_geometric_mask(d, 40.0, 0.0, "right"))


def test_geometric_band_is_exactly_right_on_random_step_edges():
    gen = torch.Generator().manual_seed(7)
    w, exact = 96, 0
    n = 200
    for _ in range(n):
        near, far = sorted(torch.rand(2, generator=gen).tolist(), reverse=True)
        div = 0.5 + 11.5 * torch.rand(1, generator=gen).item()
        conv = torch.rand(1, generator=gen).item()
        edge = int(torch.randint(20, 70, (1,), generator=gen))
        view = "left" if torch.rand(1, generator=gen).item() < 0.5 else "right"
        d = [near] * edge + [far] * (w - edge)            # near on the left: holes in the right view
        if view == "left":
            d = d[::-1]                                   # the mirror: near on the right
        s_near, s_far = ((v - conv) * div / 100 * w / 2 for v in (near, far))
        jump = s_near - s_far                  # under 1 px: one surface, no hole
        n_hidden = math.ceil(jump - 0.5) if jump >= 1 else 0
        want = (list(range(edge, edge + n_hidden)) if view == "right"
                else list(range(w - edge - n_hidden, w - edge)))
        got = cols(occlusion_mask(row(d), div, conv, view, closing=None))
        exact += got == want
    assert exact / n >= 0.95, exact


def test_geometric_keeps_background_seen_through_a_gap_in_a_thin_layer():
    # far background (shift 0) with a 2-px near stripe at columns 10-11 (shift 5.2 px):
    # in the left view the stripe covers [14.7, 16.7); background pixels 12-14 land in the
    # gap it left and stay visible; 15 and 16 are hidden
    d = [0.0] * 40
    d[10:12] = [1.0, 1.0]
    m, layered = occlusion_mask(row(d), 26.0, 0.0, "right", closing=None, return_layered=True)
    assert cols(m) == [15, 16]
    assert not layered.any()
    assert torch.equal(m, reference_geometric_mask(row(d), 26.0, 0.0, "right"))


@pytest.mark.parametrize("method", MASK_METHODS)
@pytest.mark.parametrize("slope", [0.5, -0.5, -0.9])
def test_slopes_without_jumps_give_no_holes(method, slope):
    # flat, then the shift changing by `slope` px per px over 20 px (|slope| < 1: one
    # surface, stretched or compressed), then flat; k = 100 % of 40 px / 2 = 20 px
    x = torch.arange(40, dtype=torch.float32)
    sh = slope * (x.clamp(10, 30) - 10)
    d = (sh - sh.min()) / 20.0
    m = occlusion_mask(row(d.tolist()), 100.0, 0.0, "right", closing=None, method=method)
    if method == "iw3" and slope == -0.9:
        # iw3's blended splats open false holes on a steeply compressed slope
        # (same with nunif's nonwarp_mask): one reason geometric is the default
        assert len(cols(m)) > 10
    else:
        assert not m.any(), cols(m)


# ------------------------------------------------------------------ iw3 == its rules

def test_iw3_equals_its_rules_written_pixel_by_pixel():
    gen = torch.Generator().manual_seed(5)
    b, h, w = 4, 5, 56
    div = torch.tensor([4.0, 9.0, 15.0, 6.0])
    conv = torch.tensor([0.1, 0.5, 0.9, 0.3])
    views = ["right", "left", "right", "left"]
    n_layered = 0
    for d in (random_depth(b, h, w, gen), piecewise_depth(b, h, w, gen)):
        m, layered = occlusion_mask(d, div, conv, views, closing=None, method="iw3",
                                    width=w * 1.25, return_layered=True)
        ref, ref_layered = reference_iw3_mask(d, div, conv, views, width=w * 1.25)
        assert m.any()
        assert torch.equal(m, ref)
        assert torch.equal(layered, ref_layered)
        n_layered += int(layered.sum())
    assert n_layered > 0


def test_iw3_marks_background_seen_through_a_thin_near_stripe_as_layered_holes():
    # worked by hand from iw3's rules: the 2-px stripe (shift 5.2) lands on 15.2 and 16.2;
    # step 1's index row reads ... 11 12 13 14 | 10.0 10.8 16.0 ..., so 11-14 exceed the
    # running minimum to their right and become background; step 2 sends the stripe back
    # to 9.8/10.8, whose ceil splats out-order the indices of 11-14 (layered), and nothing
    # lands on 15 (plain hole)
    d = [0.0] * 40
    d[10:12] = [1.0, 1.0]
    m, layered = occlusion_mask(row(d), 26.0, 0.0, "right", closing=None, method="iw3",
                                return_layered=True)
    assert cols(layered) == [11, 12, 13, 14]
    assert cols(m) == [11, 12, 13, 14, 15]
    # a stripe wider than the jump has no gap to see through: plain holes only
    d = [0.0] * 40
    d[10:22] = [1.0] * 12
    m, layered = occlusion_mask(row(d), 26.0, 0.0, "right", closing=None, method="iw3",
                                return_layered=True)
    assert cols(m) == [22, 23, 24, 25] and not layered.any()


def test_iw3_splat_always_blends_the_floor_and_ceil_winners():
    from inpaint_online.warp.occlusion import _iw3_splat
    # near pixels 2-3 (value 0.9) move 1.3 px right over a far background (0.2). Target 5:
    # floor winner = background 5 (weight 1 - 1e-5), ceil winner = near 3 (weight 0.3):
    # iw3 averages the two surfaces instead of letting one hide the other
    vals = row([0.2, 0.2, 0.9, 0.9, 0.2, 0.2])
    shift = row([0.0, 0.0, 1.3, 1.3, 0.0, 0.0])
    out = _iw3_splat(vals, shift, left=True)[0, 0, 0].tolist()
    wf, wc = 1 - 1e-5, 0.3
    assert out[:2] == pytest.approx([0.2, 0.2])
    assert out[2] == -1.0                                  # nothing lands on 2: a hole
    assert out[3:5] == pytest.approx([0.9, 0.9])
    assert out[5] == pytest.approx((0.2 * wf + 0.9 * wc) / (wf + wc), abs=1e-6)


@pytest.mark.parametrize("method", MASK_METHODS)
def test_per_sample_parameters_equal_running_each_sample_alone(depth_map, method):
    d = F.interpolate(depth_map, (96, 144), mode="bilinear", align_corners=False)
    d = torch.cat([d, d.flip(-1), 1 - d, d.pow(2)])
    div = torch.tensor([1.0, 3.0, 5.0, 8.0])
    conv = torch.tensor([0.0, 1.0, 0.5, 0.25])
    views = ["right", "left", "left", "right"]
    width = torch.tensor([144.0, 300.0, 144.0, 500.0])
    batched = occlusion_mask(d, div, conv, views, width=width, max_shift=40, method=method)
    assert batched.any()
    for i in range(4):
        alone = occlusion_mask(d[i:i + 1], div[i].item(), conv[i].item(), views[i],
                               width=width[i].item(), method=method)
        assert torch.equal(batched[i:i + 1], alone)


# ------------------------------------------------------------------ forward warp == reference

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


# ------------------------------------------------------------------ GPU readiness, on the CPU

@pytest.mark.parametrize("method", MASK_METHODS)
def test_mask_compiles_fullgraph_and_gives_identical_masks(depth_map, method):
    d = F.interpolate(depth_map, (48, 96), mode="bilinear", align_corners=False).repeat(3, 1, 1, 1)
    div = torch.tensor([6.0, 9.0, 12.0])
    conv = torch.tensor([0.0, 0.5, 1.0])
    left = torch.tensor([False, True, False])

    def masks(d, div, conv, left):
        return occlusion_mask(d, div, conv, left, method=method, max_shift=8.0, check=False)

    eager = masks(d, div, conv, left)
    compiled = torch.compile(masks, fullgraph=True)(d, div, conv, left)
    assert eager.any()
    assert torch.equal(compiled, eager)

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
    with pytest.raises(ValueError, match="method"):
        occlusion_mask(d, 2.0, 0.5, method="cubic")
    with pytest.raises(ValueError, match="border='none'"):
        occlusion_mask(d, 2.0, 0.5, method="iw3", border="none")


def test_unchecked_depth_is_normalised_instead_of_rejected():
    d = torch.rand(1, 1, 8, 16)
    bad = d.clone()
    bad[..., 0, 0] = float("nan")
    bad[..., 1, 1] = 7.0
    m = occlusion_mask(bad, 3.0, 0.5, check=False)
    assert m.shape == (1, 1, 8, 16)


@requires_cuda
@pytest.mark.parametrize("method", MASK_METHODS)
def test_cuda_matches_cpu(depth_map, method):
    d = depth_map[..., :128, :256].repeat(2, 1, 1, 1)
    div = torch.tensor([2.0, 5.0])
    cpu = occlusion_mask(d, div, 0.5, ["left", "right"], method=method, max_shift=32)
    gpu = occlusion_mask(d.cuda(), div.cuda(), 0.5, ["left", "right"], method=method, max_shift=32)
    assert torch.equal(cpu, gpu.cpu())

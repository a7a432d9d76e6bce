"""The streaming dataset and the sampler: geometry of crops, determinism, sharding."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from inpaint_online.cache import DEPTH_SCALE, load_pair, open_cache
from inpaint_online.stream import (
    DEPTH_OFFSET,
    CacheDataset,
    DataConfig,
    StreamSampler,
    WarpCollate,
    split_records,
)
from inpaint_online.stream.color import IDENTITY


def dataset(cache, **kw):
    m = open_cache(cache)
    kw.setdefault("jitter_p", 0.0)
    kw.setdefault("scale_range", (1.0, 1.0))
    kw.setdefault("crop_window", 1.0)         # the dataset's output is the crop itself
    return CacheDataset(m, m.samples(), DataConfig(crop=64, **kw))


def test_sampler_shards_are_disjoint_and_cover_each_epoch():
    n, world = 11, 3
    streams = [iter(StreamSampler(n, seed=5, rank=r, world=world)) for r in range(world)]
    per_rank = -(-n // world)
    epoch0 = [[next(s)[0] for _ in range(per_rank)] for s in streams]
    seen = sorted(i for part in epoch0 for i in part)
    assert set(seen) == set(range(n))                   # every sample once (+ wrap padding)
    assert len(seen) == per_rank * world
    seeds = [next(s)[1] for s in streams]
    assert len(set(seeds)) == world                      # ranks draw different randomness


def test_sampler_resume_continues_the_same_stream():
    full = iter(StreamSampler(7, seed=1))
    head = [next(full) for _ in range(20)]
    resumed = iter(StreamSampler(7, seed=1, start=9))
    assert [next(resumed) for _ in range(11)] == head[9:]


def test_balanced_sampling_draws_every_source_equally_often(small_cache):
    """small_cache: 4 photos and 6 frames of one video. By frame the video takes 6 of 10
    draws; balanced (the default) each of the 5 sources takes a fifth, the video's frames
    sharing its fifth; resume and ranks work as for the permutation."""
    import collections

    m = open_cache(small_cache)
    by_source = CacheDataset(m, m.samples(), DataConfig(crop=64))
    by_frame = CacheDataset(m, m.samples(), DataConfig(crop=64, balance="frame"))
    assert by_frame.sample_weights() is None
    w = by_source.sample_weights()
    video = [i for i in range(len(by_source)) if by_source.label(i).startswith("bikes.mp4")]
    assert len(by_source) == 10 and len(video) == 6
    sampler = iter(StreamSampler(len(by_source), seed=3, weights=w))
    draws = [next(sampler)[0] for _ in range(5000)]
    share = collections.Counter("video" if i in video else i for i in draws)
    assert set(share) == {"video", *(i for i in range(10) if i not in video)}
    assert all(abs(c / 5000 - 0.2) < 0.03 for c in share.values())
    full = iter(StreamSampler(10, seed=3, weights=w))
    head = [next(full) for _ in range(30)]
    resumed = iter(StreamSampler(10, seed=3, weights=w, start=13))
    assert [next(resumed) for _ in range(17)] == head[13:]
    ranks = [iter(StreamSampler(10, seed=3, weights=w, rank=r, world=2)) for r in range(2)]
    assert [next(ranks[r])[0] for _ in range(5) for r in range(2)] == [i for i, _ in head[:10]]


def test_a_sample_depends_only_on_its_seed_not_on_workers(small_cache):
    ds = dataset(small_cache, jitter_p=1.0)
    a, b = ds[(2, 77)], ds[(2, 77)]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(ds[(2, 78)]["rgb"], a["rgb"])
    sampler = StreamSampler(len(ds), seed=3)
    batches = []
    for workers in (0, 2):
        it = iter(DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers))
        batches.append([next(it) for _ in range(2)])
    for x, y in zip(*batches):
        assert all(torch.equal(x[k], y[k]) for k in x)


def test_crop_is_the_box_of_the_cached_pair_at_the_frame_width(small_cache):
    ds = dataset(small_cache, flip_p=0.0, scale_range=(0.8, 1.6))
    for i in range(len(ds)):
        s = ds[(i, 1000 + i)]
        rgb, depth = load_pair(ds.root, ds.item(int(s["index"]))[0])
        h, w = depth.shape
        x0, y0, x1, y1 = s["box"].tolist()
        f = 64 / (x1 - x0)
        assert (y1 - y0) * f == pytest.approx(64, rel=1e-4)
        assert float(s["width"]) == pytest.approx(w * f, rel=1e-4)    # shifts use the frame width
        assert 0 <= x0 and x1 <= w + 1e-3 and 0 <= y0 and y1 <= h + 1e-3
        # the crop's depth is the source depth inside the box (compare block means)
        src = depth[int(np.ceil(y0)):int(y1), int(np.ceil(x0)):int(x1)].astype(np.float64)
        crop = s["depth"].numpy().astype(np.float64)[0] + DEPTH_OFFSET
        assert abs(src.mean() - crop.mean()) < 0.03 * 65535
        src_rgb = rgb[int(np.ceil(y0)):int(y1), int(np.ceil(x0)):int(x1)].astype(np.float64)
        assert np.abs(src_rgb.mean((0, 1)) - s["rgb"].numpy().mean((1, 2))).max() < 8


def test_flip_mirrors_image_and_depth_of_the_same_crop(small_cache):
    plain, flipped = dataset(small_cache, flip_p=0.0)[(1, 5)], dataset(small_cache, flip_p=1.0)[(1, 5)]
    assert torch.equal(plain["box"], flipped["box"]) and bool(flipped["flip"])
    assert torch.equal(plain["rgb"].flip(-1), flipped["rgb"])
    assert torch.equal(plain["depth"].flip(-1), flipped["depth"])


def edge_count(depth_i16: torch.Tensor, threshold=0.02) -> int:
    d = (depth_i16.float() + DEPTH_OFFSET) / 65535
    return int(((d[..., 1:] - d[..., :-1]).abs() > threshold).sum())


def test_hard_crops_favour_depth_edges(small_cache):
    easy = dataset(small_cache, hard_crop_p=0.0, crop_candidates=6, scale_range=(1.5, 2.0))
    hard = dataset(small_cache, hard_crop_p=1.0, crop_candidates=6, scale_range=(1.5, 2.0))
    n = len(easy)
    e = sum(edge_count(easy[(i % n, i)]["depth"]) for i in range(3 * n))
    h = sum(edge_count(hard[(i % n, i)]["depth"]) for i in range(3 * n))
    assert h > 1.3 * e


def test_jitter_changes_colours_only_in_training(small_cache):
    m = open_cache(small_cache)
    cfg = DataConfig(crop=64, jitter_p=1.0)
    train, val = CacheDataset(m, m.samples(), cfg), CacheDataset(m, m.samples(), cfg, train=False)
    a, b = train[(0, 9)], val[(0, 9)]
    # the workers only draw the factors; the collate applies them on the training device
    assert torch.equal(a["depth"], b["depth"]) and torch.equal(a["rgb"], b["rgb"])
    assert torch.equal(b["jitter"], torch.tensor(IDENTITY))
    assert not torch.equal(a["jitter"], b["jitter"])
    batch = {k: torch.stack([a[k], b[k]]) for k in a}
    out = WarpCollate(augment=True)(batch, step=0)
    plain = WarpCollate(augment=False)(batch, step=0)
    assert not torch.allclose(out.y[0], plain.y[0], atol=0.01)
    assert torch.allclose(out.y[1], plain.y[1], atol=1e-6)


def test_validation_holds_out_whole_sources(small_cache):
    recs = open_cache(small_cache).samples()
    tr, va = split_records(recs, 0.25)
    assert va and tr and not {r["source"] for r in tr} & {r["source"] for r in va}
    assert len(tr) + len(va) == len(recs)


def test_missing_or_empty_cache_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*precompute_depth.py"):
        open_cache(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no entries"):
        open_cache(tmp_path / "empty")


def test_unreadable_source_is_skipped_with_a_warning(small_cache, tmp_path, caplog):
    import shutil
    cache = tmp_path / "c"
    shutil.copytree(small_cache, cache)
    m = open_cache(cache)
    recs = [r for r in m.samples() if r["kind"] == "image"][:2]
    broken = dict(recs[0], source=str(tmp_path / "gone.png"))
    # the cache's stored RGB makes a lost original harmless; reading originals, it is skipped
    ds = CacheDataset(m, [broken, recs[1]], DataConfig(crop=32))
    assert int(ds[(0, 1)]["index"]) == 0 and "gone.png" not in caplog.text
    ds = CacheDataset(m, [broken, recs[1]], DataConfig(crop=32, rgb_from="source"))
    s = ds[(0, 1)]
    assert int(s["index"]) == 1 and "gone.png" in caplog.text


def test_record_table_round_trips_the_records_a_sample_needs(small_cache):
    from inpaint_online.stream import RecordTable
    recs = open_cache(small_cache).samples()
    table = RecordTable(recs)
    keys = ("source", "rel", "depth_file", "kind", "frame", "clip", "depth_bytes", "depth_crc32",
            "depth_size", "rgb_file", "rgb_bytes", "rgb_crc32")
    assert [table[i] for i in range(len(table))] == [{k: r.get(k) for k in keys} for r in recs]
    assert {r["kind"] for r in recs} == {"image", "video"}


def test_workers_never_touch_the_parents_video_decoders(small_cache):
    import pickle

    from inpaint_online.stream import dataset as data_mod
    ds = dataset(small_cache, rgb_from="source")           # the originals' decoders
    video = next(i for i in range(len(ds)) if ds.item(i)[0]["kind"] == "video")
    ds[(video, 1)]                                         # the parent opens a decoder
    parent_reader = next(iter(ds._readers.values()))
    ds._pid = -12345                                       # as seen from a forked worker
    ds[(video, 2)]
    assert next(iter(ds._readers.values())) is not parent_reader
    assert any(parent_reader in parked.values() for parked in data_mod._INHERITED)
    clone = pickle.loads(pickle.dumps(ds))                 # spawn / forkserver workers
    assert not clone._readers and torch.equal(clone[(video, 3)]["rgb"], ds[(video, 3)]["rgb"])


def test_spawned_workers_give_the_same_stream(small_cache):
    m = open_cache(small_cache)
    out = []
    for start in ("fork", "spawn"):
        cfg = DataConfig(crop=32, jitter_p=0.0, worker_start=start)
        ds = CacheDataset(m, m.samples(), cfg)
        loader = DataLoader(ds, batch_size=4, sampler=StreamSampler(len(ds), seed=4), num_workers=2,
                            multiprocessing_context=start)
        out.append(next(iter(loader)))
    assert all(torch.equal(out[0][k], out[1][k]) for k in out[0])


def test_the_box_of_a_crop_chosen_in_a_window_recuts_it_from_the_cache(small_cache):
    """data.crop_window: the dataset cuts a window, the collate keeps the crop with the most
    holes; the box it reports (cached-depth pixels, the dataset's flip undone) re-cuts it."""
    from PIL import Image

    from inpaint_online.stream import CollateConfig, WarpCollate
    from inpaint_online.warp import WarpSamplerConfig
    ds = dataset(small_cache, crop_window=1.5, scale_range=(1.2, 1.6), jitter_p=0.0,
                 flip_p=0.5)
    cpu = next(iter(DataLoader(ds, batch_size=8, sampler=StreamSampler(len(ds), seed=2))))
    assert cpu["rgb"].shape[-1] == 96 and int(cpu["crop"][0]) == 64
    b = WarpCollate(WarpSamplerConfig.level(3), CollateConfig(retries=0), seed=1, augment=False)(cpu, 0)
    assert b.y.shape == (8, 3, 64, 64) and bool(cpu["flip"].any()) and not bool(cpu["flip"].all())
    for i in range(8):
        rec = ds.item(int(b.meta["index"][i]))[0]
        rgb, _ = load_pair(ds.root, rec)
        box = tuple(b.meta["box"][i].tolist())
        again = np.asarray(Image.fromarray(rgb).resize((64, 64), Image.Resampling.BILINEAR, box=box))
        if bool(b.meta["flip"][i]):
            again = again[:, ::-1]
        y = b.y[i].flip(-1) if bool(b.params.left[i]) else b.y[i]      # undo the view mirror
        got = (y * 255).round().permute(1, 2, 0).numpy()
        assert np.abs(got - again).mean() < 2.0, i


def test_cache_pairs_gives_writable_image_and_depth_tensors_at_the_cached_size(small_cache, tmp_path, caplog):
    import shutil

    from inpaint_online.cache import cache_pairs
    from inpaint_online.cache.store import Manifest, read_depth
    rows = list(cache_pairs(small_cache))
    m = Manifest(small_cache)
    assert [r["key"] for r, _, _ in rows] == [r["key"] for r in m.samples()]
    for rec, image, depth in rows:
        w, h = rec["depth_size"]
        assert image.shape == (3, h, w) and depth.shape == (1, h, w)
        assert image.dtype == depth.dtype == torch.float32
        assert 0 <= float(image.min()) and float(image.max()) <= 1 and float(depth.max()) == 1.0
        raw = read_depth(m.depth_path(rec)).astype(np.float32) / 65535
        assert torch.equal(depth[0], torch.from_numpy(raw))
        image[0, 0, 0] = 0.5                            # writable, its own memory
    assert {r["kind"] for r, _, _ in cache_pairs(small_cache, kind="video")} == {"video"}
    broken = tmp_path / "c"
    shutil.copytree(small_cache, broken)
    first = Manifest(broken).samples()[0]
    (broken / first["depth_file"]).write_bytes(b"x")
    with caplog.at_level("WARNING"):
        keys = [r["key"] for r, _, _ in cache_pairs(broken)]
    assert first["key"] not in keys and len(keys) == len(rows) - 1
    assert any("is unusable" in r.getMessage() for r in caplog.records)


def test_composite_samples_paste_a_cut_out_in_front_with_exact_depth_edges(small_cache):
    """data.composite_p: the same crop as the plain sample, a cut-out of another source on
    a plane nearer than everything, the background's pixels untouched outside it and its
    depth squeezed; deterministic; never in validation samples."""
    m = open_cache(small_cache)
    recs = [r for r in m.samples() if r["kind"] == "image"]
    base = dict(crop=64, jitter_p=0.0)
    plain = CacheDataset(m, recs, DataConfig(**base))
    comp = CacheDataset(m, recs, DataConfig(**base, composite_p=1.0))
    val = CacheDataset(m, recs, DataConfig(**base, composite_p=1.0), train=False)
    for key in [(0, 5), (1, 11), (2, 23)]:
        a, b = plain[key], comp[key]
        assert torch.equal(b["rgb"], comp[key]["rgb"]) and torch.equal(b["depth"], comp[key]["depth"])
        assert torch.equal(val[key]["rgb"], a["rgb"]) and torch.equal(val[key]["depth"], a["depth"])
        assert torch.equal(b["box"], a["box"]) and b["flip"] == a["flip"]
        d = b["depth"][0].int() + DEPTH_OFFSET
        near = d == d.max()
        share = near.float().mean()
        assert 0.05 < share < 0.8                                 # a blob of 0.2-0.45 radius
        assert (d[~near] < d.max()).all()
        # outside the cut-out (and its 1-px soft edge) the pixels are the plain sample's
        edge = torch.nn.functional.max_pool2d(near[None, None].float(), 3, 1, 1)[0, 0] > 0
        assert torch.equal(b["rgb"][:, ~edge], a["rgb"][:, ~edge])
        assert not torch.equal(b["rgb"][:, near], a["rgb"][:, near])
        # the background's depth is its own, squeezed into 30-60 %
        pd = a["depth"][0].float() + DEPTH_OFFSET
        ratio = (d[~edge].float().sum() / pd[~edge].sum()).item()
        assert 0.29 < ratio < 0.61


def test_composite_zoom_widens_only_the_layered_samples_frame(small_cache):
    """data.composite_zoom: a layered sample's frame width (what the shift is measured in)
    is multiplied by a draw in the range; its pixels and depth are the unzoomed sample's,
    plain samples are untouched, and the widened shift makes wider holes."""
    from inpaint_online.evaluate_stereo import max_run
    from inpaint_online.stream import CollateConfig, WarpCollate
    from inpaint_online.warp import WarpSamplerConfig
    m = open_cache(small_cache)
    recs = [r for r in m.samples() if r["kind"] == "image"]
    base = dict(crop=64, crop_window=1.0, jitter_p=0.0, composite_p=1.0)
    one = CacheDataset(m, recs, DataConfig(**base))
    zoom = CacheDataset(m, recs, DataConfig(**base, composite_zoom=(2.0, 3.0)))
    keys = [(i % len(one), 100 + i) for i in range(8)]
    for key in keys:
        a, b = one[key], zoom[key]
        assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["depth"], b["depth"])
        assert 2.0 * a["width"] - 1e-3 <= b["width"] <= 3.0 * a["width"] + 1e-3
    no_layers = dict(crop=64, crop_window=1.0, jitter_p=0.0)
    plain = CacheDataset(m, recs, DataConfig(**no_layers))
    plain_zoom = CacheDataset(m, recs, DataConfig(**no_layers, composite_zoom=(2.0, 3.0)))
    assert all(torch.equal(plain[k]["width"], plain_zoom[k]["width"]) for k in keys[:3])

    def widest(ds):
        items = [ds[k] for k in keys]
        cpu = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        b = WarpCollate(WarpSamplerConfig.level(2, closing_choices=((0, 0),), max_shift=64.0),
                        CollateConfig(min_hole_px=0, widen_bg_p=0.0, widen_fg_p=0.0), seed=3)(cpu, step=0)
        return sorted(max_run(b.mask[i] > 0) for i in range(len(keys)))

    w1, w2 = widest(one), widest(zoom)
    assert sum(w2) > 1.6 * sum(w1), (w1, w2)
    with pytest.raises(ValueError, match=r"data.composite_zoom must be 1 <= lo <= hi"):
        DataConfig(composite_zoom=(0.5, 2.0)).validate()


def _two_sided_hole_px(b) -> int:
    """Hole pixels of rows whose run of holes has background (not the cut-out's plane) on
    both sides: what a limb narrower than the shift leaves. Samples with a flat background."""
    n = 0
    for i in range(len(b)):
        hole = b.mask[i, 0] > 0.5
        d = b.depth[i, 0]
        far = float(d[~hole].min())
        near = (far + float(d.max())) / 2          # between the flat background and the plane
        for y in range(hole.shape[0]):
            row = hole[y].tolist()
            x = 0
            while x < len(row):
                if not row[x]:
                    x += 1
                    continue
                e = x
                while e < len(row) and row[e]:
                    e += 1
                if x > 0 and e < len(row) and d[y, x - 1] < near and d[y, e] < near:
                    n += e - x
                x = e
    return n


def test_composite_limbs_add_thin_parts_to_training_cut_outs_only(small_cache):
    """data.composite_limbs: the training cut-out is the blob plus thick strokes (the blob's
    pixels unchanged, more of the near plane); validation composites keep the blob; the
    limbs make holes with background on both sides of a row, which blobs barely do."""
    from inpaint_online.stream import CollateConfig, WarpCollate
    from inpaint_online.warp import WarpSamplerConfig
    m = open_cache(small_cache)
    recs = [r for r in m.samples() if r["kind"] == "image"]
    base = dict(crop=64, crop_window=1.0, jitter_p=0.0, composite_p=1.0, val_composite_p=1.0)
    blob = CacheDataset(m, recs, DataConfig(**base))
    limbs = CacheDataset(m, recs, DataConfig(**base, composite_limbs=3))
    keys = [(i % len(blob), 300 + i) for i in range(16)]
    grown = 0
    for key in keys[:6]:
        a, b = blob[key], limbs[key]
        assert torch.equal(b["rgb"], limbs[key]["rgb"]) and torch.equal(b["depth"], limbs[key]["depth"])
        da, db = a["depth"][0].int(), b["depth"][0].int()
        near_a, near_b = da == da.max(), db == db.max()
        assert int(da.max()) == int(db.max())                   # the same plane
        assert bool((near_b | ~near_a).all())                   # the blob is kept whole
        grown += int(near_b.sum() - near_a.sum())
        assert float(near_b.float().mean()) < 0.95
    assert grown > 0
    val_a = CacheDataset(m, recs, DataConfig(**base), train=False)
    val_b = CacheDataset(m, recs, DataConfig(**base, composite_limbs=3), train=False)
    for key in keys[:3]:
        assert torch.equal(val_a[key]["depth"], val_b[key]["depth"])
        assert torch.equal(val_a[key]["rgb"], val_b[key]["rgb"])

    def two_sided(ds):
        items = [ds[k] for k in keys]
        for it in items:      # a flat background: every hole is the cut-out's
            d = it["depth"]
            it["depth"] = torch.where(d == d.max(), d, d.min())
        cpu = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        b = WarpCollate(WarpSamplerConfig.level(3, closing_choices=((0, 0),), max_shift=12.0,
                                                edge_dilation_choices=(0,)),
                        CollateConfig(min_hole_px=0, widen_bg_p=0.0, widen_fg_p=0.0), seed=5)(cpu, step=0)
        return _two_sided_hole_px(b)

    n_blob, n_limbs = two_sided(blob), two_sided(limbs)
    assert n_limbs > 2 * n_blob + 20, (n_blob, n_limbs)
    with pytest.raises(ValueError, match=r"data.composite_limbs must be in 0..8"):
        DataConfig(composite_limbs=9).validate()


def _layered_sets(cache, *settings: dict, train: bool = True) -> list[CacheDataset]:
    """One dataset of the cache's images per dict of ``DataConfig`` settings: every sample
    layered, 64-px crops of the whole window, no jitter (the same draws in each)."""
    m = open_cache(cache)
    recs = [r for r in m.samples() if r["kind"] == "image"]
    base = dict(crop=64, crop_window=1.0, jitter_p=0.0, composite_p=1.0, val_composite_p=1.0)
    return [CacheDataset(m, recs, DataConfig(**base, **st), train=train) for st in settings]


def test_composite_near_draws_where_the_training_plane_stands(small_cache):
    """data.composite_near: the cut-out's plane at a drawn share of the gap between the
    background's nearest depth and the maximum (1 = the maximum itself); the background and
    the matte are the default's; validation composites keep the middle (0.5)."""
    mid, top, drawn = _layered_sets(small_cache, {}, {"composite_near": (1.0, 1.0)},
                                    {"composite_near": (0.3, 1.0)})
    shares = []
    for key in [(i % len(mid), 700 + i) for i in range(6)]:
        a, b, c = (ds[key]["depth"][0].int() + DEPTH_OFFSET for ds in (mid, top, drawn))
        plane = a == a.max()
        assert int(b.max()) == DEPTH_SCALE and torch.equal(b == b.max(), plane)
        assert torch.equal(a[~plane], c[~plane]) and torch.equal(c == c.max(), plane)
        bg = int(a[~plane].max())
        assert abs((int(a.max()) - bg) / (DEPTH_SCALE - bg) - 0.5) < 0.01
        shares.append((int(c.max()) - bg) / (DEPTH_SCALE - bg))
    assert all(0.29 < v < 1.001 for v in shares) and max(shares) - min(shares) > 0.1
    val, val_mid = _layered_sets(small_cache, {"composite_near": (1.0, 1.0)}, {}, train=False)
    assert torch.equal(val[(0, 5)]["depth"], val_mid[(0, 5)]["depth"])
    with pytest.raises(ValueError, match=r"data.composite_near must be 0.1 <= lo <= hi <= 1"):
        DataConfig(composite_near=(0.5, 1.2)).validate()


def test_composite_far_squeezes_the_training_background_into_the_drawn_share(small_cache):
    """data.composite_far: the layered sample's background depth scaled by a share drawn in
    the range (low = far behind the cut-out); the default range is the old draw, the matte
    and the plane's place in the gap are unchanged; validation composites keep 0.3-0.6."""
    ranges = ((0.3, 0.6), (0.6, 0.6), (0.1, 0.1), (0.05, 0.6))
    old, same, ref, fixed, drawn = _layered_sets(small_cache, {}, *({"composite_far": r} for r in ranges))
    ratios = []
    for key in [(i % len(old), 900 + i) for i in range(6)]:
        assert torch.equal(old[key]["depth"], same[key]["depth"])
        r, f, d = (ds[key]["depth"][0].float() + DEPTH_OFFSET for ds in (ref, fixed, drawn))
        plane = r == r.max()
        assert torch.equal(f == f.max(), plane) and torch.equal(d == d.max(), plane)
        near = F.max_pool2d(plane[None].float(), 3, 1, 1)[0] > 0      # off the matte's edge
        assert abs(f[~near].sum() / r[~near].sum() - 0.1 / 0.6) < 0.01
        for a in (r, f, d):                  # the plane in the middle of the gap, as before
            bg = float(a[~plane].max())
            assert abs((float(a.max()) - bg) / (DEPTH_SCALE - bg) - 0.5) < 0.01
        ratios.append(float(d[~near].sum() / r[~near].sum()) * 0.6)
    assert all(0.045 < v < 0.61 for v in ratios) and max(ratios) - min(ratios) > 0.1, ratios
    val, val_old = _layered_sets(small_cache, {"composite_far": (0.05, 0.1)}, {}, train=False)
    assert torch.equal(val[(0, 5)]["depth"], val_old[(0, 5)]["depth"])
    with pytest.raises(ValueError, match=r"data.composite_far must be 0.01 <= lo <= hi <= 0.9"):
        DataConfig(composite_far=(0.5, 0.95)).validate()


def _affine_residual(d: torch.Tensor, keep: torch.Tensor) -> float:
    """The largest distance of ``d`` on ``keep`` from its least-squares plane in (x, y)."""
    yy, xx = torch.meshgrid(torch.arange(d.shape[0]), torch.arange(d.shape[1]), indexing="ij")
    a = torch.stack([xx[keep], yy[keep], torch.ones_like(xx[keep])], 1).double()
    coef = torch.linalg.lstsq(a, d[keep].double()[:, None]).solution
    return float((a @ coef - d[keep].double()[:, None]).abs().max())


def test_composite_plane_puts_a_slanted_plane_behind_the_cut_out(small_cache):
    """data.composite_plane: the share of training composites whose background is a slanted
    plane (affine in x and y, in data.composite_far's drawn share of the range, falling to
    40-100 % of its top) instead of the sample's own depth; the matte and the cut-out's place
    are the default's; 0 keeps the old draws; validation composites are untouched."""
    old, off, plane, half = _layered_sets(small_cache, {}, {"composite_plane": 0.0},
                                          {"composite_plane": 1.0}, {"composite_plane": 0.5})
    kinds = []
    for key in [(i % len(old), 300 + i) for i in range(8)]:
        a, b, p, h = (ds[key]["depth"][0].float() + DEPTH_OFFSET for ds in (old, off, plane, half))
        assert torch.equal(a, b)
        cut = a == a.max()
        assert torch.equal(p == p.max(), cut)               # the same matte, still in front
        near = F.max_pool2d(cut[None].float(), 3, 1, 1)[0] > 0
        assert _affine_residual(p, ~near) < 1.0              # a plane, up to rounding
        assert _affine_residual(a, ~near) > 50.0             # the sample's own depth is not
        top, low = float(p[~near].max()), float(p[~near].min())
        assert 0.3 * DEPTH_SCALE - 1 <= top <= 0.6 * DEPTH_SCALE + 1 and low >= 0.4 * top - 1
        bg = float(p[~cut].max())
        assert abs((float(p.max()) - bg) / (DEPTH_SCALE - bg) - 0.5) < 0.01
        kinds.append(_affine_residual(h, ~near) < 1.0)
    assert 0 < sum(kinds) < len(kinds), kinds                # 0.5: some of each
    val, val_old = _layered_sets(small_cache, {"composite_plane": 1.0}, {}, train=False)
    assert torch.equal(val[(0, 5)]["depth"], val_old[(0, 5)]["depth"])
    with pytest.raises(ValueError, match=r"data.composite_plane must be in \[0, 1\], got 1.5"):
        DataConfig(composite_plane=1.5).validate()


def test_validation_composites_only_when_asked(small_cache):
    """data.val_composite_p: validation samples made layered (deterministic), with cut-outs
    from the validation sources themselves; training's composite_p never reaches them."""
    m = open_cache(small_cache)
    recs = [r for r in m.samples() if r["kind"] == "image"]
    base = dict(crop=64, jitter_p=0.0)
    plain = CacheDataset(m, recs, DataConfig(**base, composite_p=1.0), train=False)
    comp = CacheDataset(m, recs, DataConfig(**base, val_composite_p=1.0), train=False)
    again = CacheDataset(m, recs, DataConfig(**base, val_composite_p=1.0), train=False)
    for key in [(0, 5), (1, 11)]:
        a, b = plain[key], comp[key]
        assert torch.equal(b["rgb"], again[key]["rgb"]) and torch.equal(b["depth"], again[key]["depth"])
        assert not torch.equal(a["depth"], b["depth"])
        d = b["depth"][0].int() + DEPTH_OFFSET
        assert 0.05 < (d == d.max()).float().mean() < 0.8       # the cut-out's plane


def test_composite_holes_start_at_the_cut_outs_edge(small_cache):
    """Warped, a composite's holes lie right after the cut-out (right-view orientation):
    the background side, the content behind them known."""
    from inpaint_online.stream import CollateConfig, WarpCollate
    from inpaint_online.warp import WarpSamplerConfig
    m = open_cache(small_cache)
    recs = [r for r in m.samples() if r["kind"] == "image"]
    ds = CacheDataset(m, recs, DataConfig(crop=64, crop_window=1.0, jitter_p=0.0, composite_p=1.0))
    items = [ds[(i % len(ds), 100 + i)] for i in range(8)]
    cpu = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    # no edge dilation: it grows the cut-out's depth past its matte (tested in test_warp_params)
    b = WarpCollate(WarpSamplerConfig.level(3, closing_choices=((0, 0),), edge_dilation_choices=(0,)),
                    CollateConfig(min_hole_px=0, widen_bg_p=0.0, widen_fg_p=0.0), seed=3)(cpu, step=0)
    near = b.depth >= b.depth.flatten(1).amax(1).view(-1, 1, 1, 1) - 1e-4
    hole = b.mask > 0
    # every hole pixel has the cut-out within the largest shift on its left
    reach = torch.zeros_like(hole)
    for k in range(1, 40):
        reach[..., k:] |= near[..., :-k]
    assert hole.sum() > 200 and (hole & ~reach).sum() == 0


def test_a_crop_larger_than_the_frame_never_falls_off_its_edge(small_cache, caplog):
    # a frame enlarged to just fit the crop: h * (s / h) can round to a hair under s in float
    # (400 * (510 / 400) = 509.99999999999994), which once gave a negative crop offset and
    # the source was skipped ("box offset can't be negative")
    m = open_cache(small_cache)
    tried = 0
    for rec in m.samples():
        w, h = rec["depth_size"]
        s = next((c for c in range(min(w, h) + 1, min(w, h) + 400)
                  if min(w, h) * (c / min(w, h)) < c), None)
        if s is None:
            continue
        tried += 1
        ds = CacheDataset(m, [rec], DataConfig(crop=s, crop_window=1.0, scale_range=(1.0, 1.0),
                                               jitter_p=0.0))
        for seed in range(3):
            with caplog.at_level("WARNING"):
                out = ds[(0, seed)]
            assert "skipping" not in caplog.text
            x0, y0, x1, y1 = out["box"].tolist()
            assert 0 <= x0 and 0 <= y0 and x1 <= w and y1 <= h and out["rgb"].shape[-1] == s
    assert tried >= 2


def test_window_resize_matches_pillows_filter(small_cache):
    """The windows are resized by torch in one call per clip: Pillow's bilinear filter on the
    same whole-pixel square cut out of the frame (antialiased when shrinking, plain when
    enlarging; the cut's edges replicated) is the reference — within 2 levels of 255 for RGB
    and 2e-4 of the range for depth."""
    from PIL import Image

    from inpaint_online.stream.dataset import _resize_square
    m = open_cache(small_cache)
    rgb, depth = load_pair(m, m.samples()[0])
    h, w = depth.shape
    rng = np.random.default_rng(0)
    for _ in range(12):
        side = int(rng.integers(20, min(h, w)))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        for size in (64, 97, side):
            got = _resize_square([rgb[y0:y0 + side, x0:x0 + side]], size)[0].permute(1, 2, 0)
            got_d = _resize_square([depth[y0:y0 + side, x0:x0 + side]], size)[0, 0]
            box = (x0, y0, x0 + side, y0 + side)
            ref = np.asarray(Image.fromarray(rgb).crop(box).resize((size, size), Image.Resampling.BILINEAR))
            ref_d = np.asarray(Image.fromarray(depth.astype(np.float32), mode="F").crop(box)
                               .resize((size, size), Image.Resampling.BILINEAR))
            assert got.dtype == torch.uint8 and got_d.dtype == torch.float32
            assert np.abs(got.numpy().astype(int) - ref).max() <= 2, (box, size)
            assert np.abs(got_d.numpy() - ref_d).max() < 2e-4 * 65535, (box, size)

"""--export-dir: exports iw3's trainer reads (tests/iw3_reader.py), determinism, resume after
a kill, read-back equality, names that can share a folder, the refusals."""
import json

import numpy as np
import pytest
import torch
from conftest import tiny_config
from iw3_reader import read_export
from PIL import Image
from torch.utils.data import DataLoader

import inpaint_online.export.layout as export_layout
from inpaint_online.cache import open_cache
from inpaint_online.config import ConfigError, load_config
from inpaint_online.errors import DataError
from inpaint_online.export import export_dataset, plan_export, read_sample
from inpaint_online.export.source_yield import SourceYield
from inpaint_online.stream import CacheDataset, StreamSampler, WarpCollate, mix_seed, split_records


def files(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def cfg_for(cache, tmp_path, *o):
    return tiny_config(cache, tmp_path, "collate.min_hole_px=30", *o)


def export(cfg, out, count, eval_count=8, alone=True, **kw):
    """An export at iw3's smallest readable size; it must pass the iw3 reader."""
    kw.setdefault("size", 256)
    s = export_dataset(cfg, out, count, eval_count, progress=False, **kw)
    counts = read_export(out)
    if alone:
        assert counts == {"train": s.written["train"], "eval": s.written["eval"]}
    return s


def index_of(d, split="train"):
    (path,) = (d / split).glob("*.index.jsonl")
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_export_writes_iw3_layout_with_an_index(small_cache, tmp_path):
    s = export(cfg_for(small_cache, tmp_path), tmp_path / "ex", 10)
    assert s.written == {"train": 10, "eval": 8} and s.rate > 0
    for split, n in (("train", 10), ("eval", 8)):
        d = tmp_path / "ex" / split
        index = index_of(tmp_path / "ex", split)
        assert len(index) == n
        for r in index:
            assert r["name"].startswith(s.plan.prefix + "_")
            x, m, y = read_sample(d, r["name"])
            assert y.shape == (3, 256, 256) and r["size"] == 256
            assert int(m.sum()) == r["hole_px"] >= 30
            assert {"divergence", "convergence", "mapper", "view", "width", "box", "source"} <= set(r)
            assert r["method"] == "geometric" and r["layered_px"] == 0
    srcs = {sp: {r["source"] for r in index_of(tmp_path / "ex", sp)} for sp in ("train", "eval")}
    assert not srcs["train"] & srcs["eval"]                 # eval comes from held-out sources


def test_export_is_byte_identical_for_a_seed(small_cache, tmp_path):
    export(cfg_for(small_cache, tmp_path), tmp_path / "a", 9, threads=4)
    export(cfg_for(small_cache, tmp_path), tmp_path / "b", 9, threads=1)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    export(cfg_for(small_cache, tmp_path, "run.seed=1"), tmp_path / "c", 9)
    assert index_of(tmp_path / "a") != index_of(tmp_path / "c")


def test_two_exports_and_foreign_data_share_a_folder(small_cache, tmp_path):
    out = tmp_path / "ex"
    (out / "train").mkdir(parents=True)
    foreign = out / "train" / "iw3data_0001_C.png"        # iw3's own generator's files
    Image.new("RGB", (512, 512)).save(foreign)
    Image.new("L", (512, 512), 255).save(out / "train" / "iw3data_0001_M.png")
    a = export(cfg_for(small_cache, tmp_path), out, 5, alone=False)
    b = export(cfg_for(small_cache, tmp_path, "warp.level=2"), out, 4, alone=False)
    assert a.plan.prefix != b.plan.prefix                 # derived from the settings
    assert read_export(out) == {"train": 5 + 4 + 1, "eval": 16}
    assert foreign.is_file()
    again = export(cfg_for(small_cache, tmp_path), out, 5, alone=False)   # a re-run finds its own state
    assert again.plan.prefix == a.plan.prefix and again.written == a.written
    with pytest.raises(ConfigError, match="other settings.*warp"):
        export_dataset(cfg_for(small_cache, tmp_path, "warp.level=1"), out, 2, 8, size=256,
                       prefix=a.plan.prefix, progress=False)


def test_exports_iw3_could_not_read_are_refused_before_any_work(small_cache, tmp_path):
    cfg = cfg_for(small_cache, tmp_path)
    for kw, why in [({"size": 128}, "--export-size 128 is below the 256 px"),
                    ({"eval_count": 3}, "--export-eval-count 3 is below iw3's eval batch of 8")]:
        args = {"size": 256, "eval_count": 8, **kw}
        with pytest.raises(ConfigError, match="could not be read by iw3's inpainting trainer: " + why):
            export_dataset(cfg, tmp_path / "no", 2, args.pop("eval_count"), progress=False, **args)
        assert not (tmp_path / "no").exists()
    s = export_dataset(cfg, tmp_path / "forced", 2, 3, size=128, force=True, progress=False)
    assert s.written == {"train": 2, "eval": 3}
    with pytest.raises(AssertionError, match="smaller than iw3's 256 px crop"):
        read_export(tmp_path / "forced")
    with pytest.raises(ConfigError, match="no held-out sources"):
        export_dataset(cfg_for(small_cache, tmp_path, "data.val_fraction=0"), tmp_path / "nv", 2,
                       size=256, progress=False)


def test_killed_export_resumes_without_duplicates_or_gaps(small_cache, tmp_path, monkeypatch):
    cfg = cfg_for(small_cache, tmp_path)
    export(cfg, tmp_path / "ref", 14)
    real, calls = export_layout.png_bytes, {"n": 0}

    def dying(a):
        calls["n"] += 1
        if calls["n"] == 20:                    # mid-way through the second batch
            raise KeyboardInterrupt
        return real(a)
    monkeypatch.setattr(export_layout, "png_bytes", dying)
    with pytest.raises(KeyboardInterrupt):
        export_dataset(cfg, tmp_path / "run", 14, 8, size=256, progress=False, threads=1)
    monkeypatch.setattr(export_layout, "png_bytes", real)
    (index,) = (tmp_path / "run" / "train").glob("*.index.jsonl")
    with open(index, "a") as f:
        f.write('{"name": "torn')                 # a torn line from the kill
    (progress,) = (tmp_path / "run").glob("*.progress.json")
    assert 0 < json.loads(progress.read_text())["train"]["written"] < 14
    export(cfg, tmp_path / "run", 14)
    assert files(tmp_path / "run") == files(tmp_path / "ref")
    # asking for more continues the same stream
    export(cfg, tmp_path / "run", 20)
    export(cfg, tmp_path / "ref20", 20)
    assert files(tmp_path / "run") == files(tmp_path / "ref20")


def test_exported_files_read_back_as_the_generated_tensors(small_cache, tmp_path):
    cfg = cfg_for(small_cache, tmp_path, "collate.min_hole_px=0", "data.crop=256")
    s = export(cfg, tmp_path / "ex", 4)
    m = open_cache(small_cache)
    train_recs, _ = split_records(m.samples(), cfg.data.val_fraction)
    seed = mix_seed(cfg.run.seed, "export", "train")
    ds = CacheDataset(m, train_recs, cfg.data, train=False)
    cpu = next(iter(DataLoader(ds, batch_size=4, sampler=StreamSampler(
        len(ds), seed=seed, weights=ds.sample_weights()))))
    b = WarpCollate(cfg.warp, cfg.collate, seed=seed, augment=False)(cpu, step=0)
    for i in range(4):
        name = f"{s.plan.prefix}_{i:08d}"
        x, mask, y = read_sample(tmp_path / "ex" / "train", name)
        assert torch.equal(mask, b.mask[i]) and torch.equal(y, b.y[i]) and torch.equal(x, b.x[i])
        masked = np.array(Image.open(tmp_path / "ex" / "train" / f"{name}_I.png"))
        assert torch.equal(torch.from_numpy(masked).permute(2, 0, 1).float() / 255, b.x[i])


def test_export_cli(small_cache, tmp_path, capsys):
    from test_train import cli_main
    main = cli_main()
    args = ["--quiet", f"data.cache_dir={small_cache}", "data.num_workers=0",
            "collate.min_hole_px=10", "data.val_fraction=0.25", "warp.level=3"]
    assert main([*args, "--export-dir", str(tmp_path / "ex"), "--export-count", "3",
                 "--export-eval-count", "8"]) == 0
    out = capsys.readouterr().out
    assert "exported 3 train + 8 eval samples (256x256, names io" in out and "samples/s" in out
    assert out.strip().endswith("; iw3's trainer reads its eval split with --batch-size up to 8")
    assert read_export(tmp_path / "ex") == {"train": 3, "eval": 8}


def test_the_default_eval_split_serves_iw3_batch_sizes_up_to_64():
    """iw3 evaluates images in batches of its --batch-size (drop_last): 8 eval samples and
    --batch-size 16 divide by zero there. Clips go one at a time."""
    from inpaint_online.export.plan import default_eval_count
    assert [default_eval_count(n, video=False) for n in (2, 640, 2000)] == [64, 64, 200]
    assert [default_eval_count(n, video=True) for n in (2, 200)] == [8, 20]
    cfg = load_config(None, ["data.clip_len=4"])
    plan = plan_export(cfg, [], 4, 2, size=256, clip_len=16)       # 2 clips: enough for iw3
    assert plan.eval_count == 2


def test_iw3_method_export_records_its_method_and_layered_holes(small_cache, tmp_path):
    export(cfg_for(small_cache, tmp_path, "collate.method=iw3", "warp.level=3"), tmp_path / "ex", 12)
    index = index_of(tmp_path / "ex")
    assert {r["method"] for r in index} == {"iw3"}
    # layered holes are holes (before closing), so never more than the hole pixels
    assert all(0 <= r["layered_px"] <= r["hole_px"] for r in index)
    assert sum(r["layered_px"] for r in index) > 0
    (saved,) = (tmp_path / "ex").glob("*.export.json")
    assert "iw3" in saved.read_text()


@pytest.mark.parametrize("config, cache", [("configs/demo.yaml", "small_cache"),
                                           ("configs/demo_video.yaml", "clip_cache")])
def test_the_demo_configs_export_what_iw3_reads_with_no_extra_flags(config, cache, request, tmp_path):
    from pathlib import Path

    from test_train import cli_main
    root = Path(__file__).resolve().parents[1]
    cache_dir = request.getfixturevalue(cache)
    out = tmp_path / "ex"
    assert cli_main()(["--config", str(root / config), f"data.cache_dir={cache_dir}",
                       "data.num_workers=0", "--export-dir", str(out), "--export-count", "2",
                       "--export-eval-count", "8", "--quiet"]) == 0
    counts = read_export(out)
    assert counts == {"train": 2, "eval": 8}
    (index,) = (out / "train").glob("*.index.jsonl")
    r = json.loads(index.read_text().splitlines()[0])
    assert r["size"] >= 256 and len(r.get("frames", [0] * 16)) == 16


def test_a_cache_without_runs_long_enough_is_refused_before_any_write(small_cache, tmp_path):
    cfg = tiny_config(small_cache, tmp_path, "data.clip_len=4", "data.val_fraction=0.25")
    with pytest.raises(ValueError, match="no video clips of >= 16 consecutive cached frames.*--clip-len 16"):
        export_dataset(cfg, tmp_path / "ex", 2, size=256, progress=False)
    assert not (tmp_path / "ex").exists()


@pytest.fixture(scope="module")
def flat_cache(tmp_path_factory):
    """Three real photos and a flat grey picture: the picture's depth is the fallback's prior
    alone (no edges of its own), which rarely folds into holes."""
    from conftest import skimage_data_dir

    from inpaint_online.cache.fill import precompute
    from inpaint_online.cache.store import Sampling
    from inpaint_online.depth import FallbackBackend
    media = tmp_path_factory.mktemp("flatmedia")
    for name in ["astronaut.png", "coffee.png", "chelsea.png"]:
        Image.open(skimage_data_dir() / name).convert("RGB").save(media / name)
    Image.new("RGB", (320, 240), (128, 128, 128)).save(media / "flat.png")
    cache = tmp_path_factory.mktemp("flatcache")
    s = precompute([str(media)], str(cache), FallbackBackend(), sampling=Sampling(max_frames=1),
                   max_size=320, progress=False)
    assert not s.errors
    return cache


def test_a_source_with_too_few_holes_is_left_out_once_with_one_line(flat_cache, tmp_path, caplog):
    cfg = cfg_for(flat_cache, tmp_path, "data.val_fraction=0")

    def export(cfg, out, count, **kw):                 # no eval split: not for iw3's reader
        return export_dataset(cfg, out, count, 0, size=256, force=True, progress=False, **kw)
    kw = {}
    with caplog.at_level("WARNING", logger="inpaint_online.export"):
        s = export(cfg, tmp_path / "ex", 32, **kw)
    assert [p.rsplit("/", 1)[-1] for p in s.left_out["train"]] == ["flat.png"]
    lines = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    # 6 drops in a row from its first drop decide it (the sequential test at min_yield 0.25)
    assert "flat.png: left out of the train export: 0 of its 6 samples since its first drop " \
           "had >= 30 hole px per frame at warp level 3 (cached frames 320x240)" in lines[0]
    (progress,) = (tmp_path / "ex").glob("*.progress.json")
    st = json.loads(progress.read_text())["train"]
    (decided,) = st["left_out"].values()
    index = index_of(tmp_path / "ex")
    assert len(index) == 32 and index[-1]["position"] > decided + 8
    # nothing of it after the batch that decided it (batch_size 4): later draws skipped unwarped
    assert not any(r["source"].endswith("flat.png") and r["position"] >= decided + 3 for r in index)
    assert s.dropped["train"] >= 6 and s.skipped["train"] > 0
    assert st["next_position"] == 32 + s.dropped["train"] + s.skipped["train"]
    # the decision is part of the resumable state: 10 then 32 gives the same bytes as 32
    export(cfg, tmp_path / "two", 10, **kw)
    export(cfg, tmp_path / "two", 32, **kw)
    assert files(tmp_path / "two") == files(tmp_path / "ex")
    # --export-min-yield 0 keeps every source (its drops are counted, as before)
    s0 = export(cfg, tmp_path / "all", 32, min_yield=0, **kw)
    assert s0.left_out["train"] == [] and s0.skipped["train"] == 0
    assert s0.dropped["train"] > s.dropped["train"]


def test_an_export_whose_sources_all_give_too_few_holes_stops_with_one_line(small_cache, tmp_path, capsys):
    from test_train import cli_main
    main = cli_main()
    rc = main(["--quiet", f"data.cache_dir={small_cache}", "data.num_workers=0", "warp.level=1",
               "collate.min_hole_px=1000000", "data.val_fraction=0.25", "--export-dir",
               str(tmp_path / "ex"), "--export-count", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "Traceback" not in "\n".join(err)
    assert err[-1] == ("train_online.py: error: export train: every source was left out: too few "
                       "of their samples had >= 1000000 hole px per frame at warp level 1 "
                       "(--export-min-yield 0.25); use a higher warp.level, a lower "
                       "collate.min_hole_px or --export-min-yield 0")


def test_the_yield_test_decides_as_documented():
    def run(seq, y=0.25):
        st = {}
        yl = SourceYield(st, y, {"a", "b"}, "train", "warp level 1", 30)
        for pos, kept in enumerate(seq):
            if yl.skip("a", pos):
                return pos, st
            yl.record({"source": "a"}, kept, pos)
        return (len(seq) if yl.skip("a", len(seq)) else None), st
    pos, st = run([True] * 50 + [False] * 6)          # kept until its first drop: 6 decide
    assert pos == 56 and st["left_out"] == {"a": 56}
    assert run([False] * 5)[0] is None                 # 5 drops are not evidence enough
    pos, st = run([False, True] * 100)                 # keeps 1 in 2 (2Y): proven, never tested again
    assert pos is None and st["at_risk"]["a"] == "ok"
    assert run([False] * 100, y=0)[0] is None          # min_yield 0 keeps every source
    pos, _ = run([False] * 100, y=0.45)                # higher Y: bad (0.225) vs good (0.9): 2 drops
    assert pos == 2
    with pytest.raises(DataError, match="every source was left out"):
        yl = SourceYield({}, 0.25, {"a"}, "train", "warp level 1", 30)
        for pos in range(6):
            yl.record({"source": "a"}, False, pos)


def test_a_chosen_prefix_draws_its_own_samples(small_cache, tmp_path):
    """Two exports of the same settings under two prefixes once wrote byte-identical copies."""
    cfg = load_config(None, [f"data.cache_dir={small_cache}", "data.num_workers=0",
                             "collate.min_hole_px=10", "data.val_fraction=0.25", "warp.level=3"])
    out = tmp_path / "ex"
    for prefix in ("a", "b"):
        export_dataset(cfg, out, 2, 8, prefix=prefix, progress=False)
    a = {p.read_bytes() for p in (out / "train").glob("a_*_C.png")}
    b = {p.read_bytes() for p in (out / "train").glob("b_*_C.png")}
    assert len(a) == len(b) == 2 and not a & b
    export_dataset(cfg, tmp_path / "again", 2, 8, prefix="a", progress=False)
    assert {p.read_bytes() for p in (tmp_path / "again" / "train").glob("a_*_C.png")} == a

"""--export-dir: iw3 layout, determinism, resume after a kill, read-back equality."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from inpaint_online.collate import WarpCollate
from inpaint_online.config import ConfigError
from inpaint_online.data import CacheDataset, StreamSampler, mix_seed, open_cache, split_records
from inpaint_online.export import export_dataset, read_sample
import inpaint_online.export as export_mod

from conftest import tiny_config


def files(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def cfg_for(cache, tmp_path, *o):
    return tiny_config(cache, tmp_path, "collate.min_hole_px=30", *o)


def test_export_writes_iw3_layout_with_an_index(small_cache, tmp_path):
    s = export_dataset(cfg_for(small_cache, tmp_path), tmp_path / "ex", 10, 3, progress=False)
    assert s.written == {"train": 10, "eval": 3} and s.rate > 0
    for split, n in (("train", 10), ("eval", 3)):
        d = tmp_path / "ex" / split
        index = [json.loads(x) for x in (d / "index.jsonl").read_text().splitlines()]
        assert len(index) == n
        for r in index:
            assert (d / f"{r['name']}_C.png").is_file() and (d / f"{r['name']}_M.png").is_file()
            x, m, y = read_sample(d, r["name"])
            assert int(m.sum()) == r["hole_px"] >= 30
            assert {"divergence", "convergence", "mapper", "view", "width", "box", "source"} <= set(r)
            assert r["method"] == "geometric" and r["layered_px"] == 0
    srcs = {s: {json.loads(x)["source"] for x in (tmp_path / "ex" / s / "index.jsonl").read_text().splitlines()}
            for s in ("train", "eval")}
    assert not srcs["train"] & srcs["eval"]                 # eval comes from held-out sources


def test_export_is_byte_identical_for_a_seed(small_cache, tmp_path):
    export_dataset(cfg_for(small_cache, tmp_path), tmp_path / "a", 9, 2, progress=False, threads=4)
    export_dataset(cfg_for(small_cache, tmp_path), tmp_path / "b", 9, 2, progress=False, threads=1)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    export_dataset(cfg_for(small_cache, tmp_path, "run.seed=1"), tmp_path / "c", 9, 2, progress=False)
    assert files(tmp_path / "a")["train/index.jsonl"] != files(tmp_path / "c")["train/index.jsonl"]


def test_killed_export_resumes_without_duplicates_or_gaps(small_cache, tmp_path, monkeypatch):
    cfg = cfg_for(small_cache, tmp_path)
    export_dataset(cfg, tmp_path / "ref", 14, 2, progress=False)
    real, calls = export_mod._png, {"n": 0}

    def dying(a):
        calls["n"] += 1
        if calls["n"] == 20:                    # mid-way through the second batch
            raise KeyboardInterrupt
        return real(a)
    monkeypatch.setattr(export_mod, "_png", dying)
    with pytest.raises(KeyboardInterrupt):
        export_dataset(cfg, tmp_path / "run", 14, 2, progress=False, threads=1)
    monkeypatch.setattr(export_mod, "_png", real)
    with open(tmp_path / "run" / "train" / "index.jsonl", "a") as f:
        f.write('{"name": "torn')                 # a torn line from the kill
    progress = json.loads((tmp_path / "run" / "progress.json").read_text())
    assert 0 < progress["train"]["written"] < 14
    export_dataset(cfg, tmp_path / "run", 14, 2, progress=False)
    assert files(tmp_path / "run") == files(tmp_path / "ref")
    # asking for more continues the same stream
    export_dataset(cfg, tmp_path / "run", 20, 2, progress=False)
    export_dataset(cfg, tmp_path / "ref20", 20, 2, progress=False)
    assert files(tmp_path / "run") == files(tmp_path / "ref20")


def test_exported_files_read_back_as_the_generated_tensors(small_cache, tmp_path):
    cfg = cfg_for(small_cache, tmp_path, "collate.min_hole_px=0")
    export_dataset(cfg, tmp_path / "ex", 4, 0, progress=False)
    m = open_cache(small_cache)
    train_recs, _ = split_records(m.samples(), cfg.data.val_fraction)
    seed = mix_seed(cfg.run.seed, "export", "train")
    ds = CacheDataset(m, train_recs, cfg.data, train=False)
    cpu = next(iter(DataLoader(ds, batch_size=4, sampler=StreamSampler(len(ds), seed=seed))))
    b = WarpCollate(cfg.warp, cfg.collate, seed=seed, augment=False)(cpu, step=0)
    for i in range(4):
        x, mask, y = read_sample(tmp_path / "ex" / "train", f"{i:08d}")
        assert torch.equal(mask, b.mask[i]) and torch.equal(y, b.y[i]) and torch.equal(x, b.x[i])
        masked = np.array(Image.open(tmp_path / "ex" / "train" / f"{i:08d}_I.png"))
        assert torch.equal(torch.from_numpy(masked).permute(2, 0, 1).float() / 255, b.x[i])


def test_export_refuses_a_directory_made_with_other_settings(small_cache, tmp_path):
    export_dataset(cfg_for(small_cache, tmp_path), tmp_path / "ex", 2, 0, progress=False)
    with pytest.raises(ConfigError, match="other settings.*warp"):
        export_dataset(cfg_for(small_cache, tmp_path, "warp.level=1"), tmp_path / "ex", 2, 0,
                       progress=False)


def test_export_cli(small_cache, tmp_path, capsys):
    from test_train import cli_main
    main = cli_main()
    args = ["--quiet", f"data.cache_dir={small_cache}", "data.crop=48", "data.num_workers=0",
            "collate.min_hole_px=10", "data.val_fraction=0.25", "warp.level=3"]
    assert main([*args, "--export-dir", str(tmp_path / "ex"), "--export-count", "3"]) == 0
    out = capsys.readouterr().out
    assert "exported 3 train + 1 eval samples" in out and "samples/s" in out


def test_iw3_method_export_records_its_method_and_layered_holes(small_cache, tmp_path):
    export_dataset(cfg_for(small_cache, tmp_path, "collate.method=iw3", "warp.level=3"),
                   tmp_path / "ex", 12, 0, progress=False)
    index = [json.loads(x) for x in (tmp_path / "ex" / "train" / "index.jsonl").read_text().splitlines()]
    assert {r["method"] for r in index} == {"iw3"}
    # layered holes are holes (before closing), so never more than the hole pixels
    assert all(0 <= r["layered_px"] <= r["hole_px"] for r in index)
    assert sum(r["layered_px"] for r in index) > 0
    saved = json.loads((tmp_path / "ex" / "export.json").read_text())
    assert "iw3" in json.dumps(saved)

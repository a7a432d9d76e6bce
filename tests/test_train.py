"""The training loop: learning, bit-exact resume, DDP (gloo, 2 processes), clear errors."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_config

from inpaint_online.cache import open_cache
from inpaint_online.checkpoint import CheckpointError, load_checkpoint
from inpaint_online.config import ConfigError, load_config
from inpaint_online.losses import hole_psnr
from inpaint_online.models import GatedUNet, ModelConfig, composite
from inpaint_online.stream import CacheDataset, WarpCollate
from inpaint_online.train import Trainer, train

ROOT = Path(__file__).resolve().parents[1]


def fixed_batch(cache, cfg, n=4):
    m = open_cache(cache)
    ds = CacheDataset(m, m.samples(), cfg.data)
    items = [ds[(i, 40 + i)] for i in range(n)]
    cpu = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    return WarpCollate(cfg.warp, cfg.collate)(cpu, step=0)


def test_tiny_model_overfits_a_few_crops(small_cache, tmp_path):
    cfg = tiny_config(small_cache, tmp_path, "data.crop=64", "model.channels=16", "optim.lr=0.003",
                      "optim.warmup_steps=5", "optim.schedule=constant", "collate.widen_bg_p=1.0")
    batch = fixed_batch(small_cache, cfg)
    assert batch.mask.sum() > 500
    trainer = Trainer(cfg, torch.device("cpu"))
    first, _ = trainer.step(batch)
    for _ in range(150):
        loss, parts = trainer.step(batch)
    assert loss < 0.35 * first, (float(first), float(loss))
    with torch.no_grad():
        out = composite(batch.x, batch.mask, trainer.predict(batch).clamp(0, 1))
    assert hole_psnr(out, batch.y, batch.mask).mean() > 22


def test_resume_gives_bit_identical_weights(small_cache, tmp_path):
    common = ("data.num_workers=2",)
    once = train(tiny_config(small_cache, tmp_path / "a", *common), progress=False)
    train(tiny_config(small_cache, tmp_path / "b", *common, "train.stop_at=3"), progress=False)
    part = load_checkpoint(tmp_path / "b" / "t" / "checkpoints" / "last.pt")
    assert part["step"] == 3
    assert part["config"]["collate"]["method"] == "geometric"      # the masks it was trained on
    resumed = train(tiny_config(small_cache, tmp_path / "b", *common), resume=True, progress=False)
    assert once.step == resumed.step == 6
    a, b = once.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ca = load_checkpoint(tmp_path / "a" / "t" / "checkpoints" / "last.pt")
    cb = load_checkpoint(tmp_path / "b" / "t" / "checkpoints" / "last.pt")
    sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    # the validation numbers at step 6 agree as well (fixed validation set)
    assert once.val[-1] == pytest.approx(resumed.val[-1])


def test_run_writes_logs_checkpoints_and_best(small_cache, tmp_path):
    res = train(tiny_config(small_cache, tmp_path), progress=False)
    run = tmp_path / "t"
    assert (run / "config.yaml").is_file() and list((run / "tb").glob("events.out.tfevents.*"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert len(train_rows) == 6 and {"loss", "lr", "samples_per_s", "data_wait_fraction"} <= set(train_rows[0])
    assert 0 <= train_rows[-1]["data_wait_fraction"] <= 1
    val = [r for r in rows if r["kind"] == "val"]
    # step 0 = the untrained model, the curve's reference and a best.pt candidate like any step
    assert [r["step"] for r in val] == [0, 3, 6] and all(r["psnr_hole"] > 5 for r in val)
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["best"]["value"] == max(r["psnr_hole"] for r in val)
    assert best["best"]["first_guess"] == val[0]["psnr_hole"]
    assert res.val[0]["step"] == 0
    assert res.step == 6
    # TensorBoard holds the scalars and the image grids
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(run / "tb"))
    ea.Reload()
    assert {"loss/loss", "loss/hole_l1", "optim/lr", "optim/grad_norm", "perf/samples_per_s",
            "perf/data_wait_fraction", "data/hole_fraction", "score/psnr_hole",
            "score/ssim_hole"} <= set(ea.Tags()["scalars"])
    assert {"val/input_pred_target_error_zoom", "train/input_pred_target_error_zoom"} <= set(ea.Tags()["images"])


def test_a_run_with_a_checkpoint_needs_resume(small_cache, tmp_path):
    train(tiny_config(small_cache, tmp_path, "train.steps=2"), progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny_config(small_cache, tmp_path, "train.steps=2"), progress=False)


def test_checkpoint_of_another_model_is_refused(small_cache, tmp_path):
    train(tiny_config(small_cache, tmp_path, "train.steps=2"), progress=False)
    with pytest.raises(CheckpointError, match="model.channels = 8 in the checkpoint, 12 in the config"):
        train(tiny_config(small_cache, tmp_path, "train.steps=4", "model.channels=12"),
              resume=True, progress=False)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "train_online.py"), "--quiet", *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def cli_main():
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_online", ROOT / "train_online.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_bad_config_keys_and_values_are_clear_errors(tmp_path, capsys):
    r = run_cli("data.batchsize=4")                 # once through a real process: no traceback
    assert r.returncode == 2 and "unknown key(s) data.batchsize" in r.stderr and "batch_size" in r.stderr
    assert "Traceback" not in r.stderr
    main = cli_main()

    def err(*args):
        assert main(["--quiet", *args]) == 2
        return capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  chanels: 4\n")
    assert f"{bad}: unknown key(s) model.chanels" in err("--config", str(bad))
    bad.write_text("optim:\n  lr: fast\n")
    assert "optim.lr: expected a number, got 'fast'" in err("--config", str(bad))
    bad.write_text("train: [1, 2\n")
    assert "not valid YAML" in err("--config", str(bad))
    assert "config file not found" in err("--config", str(tmp_path / "nope.yaml"))
    assert "expected section.key=value" in err("batch_size=3")


def test_missing_cache_is_a_clear_error(tmp_path):
    r = run_cli("--config", str(ROOT / "configs" / "demo.yaml"), f"data.cache_dir={tmp_path / 'none'}",
                f"run.out_dir={tmp_path}")
    assert r.returncode == 2 and "no depth cache here" in r.stderr and "precompute_depth.py" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_loads_and_builds_its_model(name):
    from inpaint_online.models import build_model
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.train.steps >= 1
    build_model(cfg.model)


def test_a_dual_model_with_layered_samples_trains_and_its_checkpoint_fills_with_depth(small_cache, tmp_path):
    """configs/cpu_quality.yaml's kind of model: both first guesses, depth in, composites."""
    from inpaint_online.inference import inpaint, load_model
    res = train(tiny_config(small_cache, tmp_path, "model.prefill=dual", "model.use_depth=true",
                            "data.composite_p=0.5", "train.ema_decay=0.9"), progress=False)
    assert res.step == 6
    ckpts = tmp_path / "t" / "checkpoints"
    model = load_model(ckpts / "best.pt")
    assert model.config.prefill == "dual" and model.config.use_depth
    assert load_model(ckpts / "best_ema.pt").config.prefill == "dual"
    x, m = torch.rand(1, 3, 40, 56), torch.zeros(1, 1, 40, 56)
    m[..., 10:30, 20:30] = 1
    out = inpaint(model, x, m, torch.rand(1, 1, 40, 56))
    assert torch.equal(out[(m == 0).expand_as(out)], x[(m == 0).expand_as(x)])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("floor", [(), ("model.share_floor=0.3", "model.correction=every_side")])
def test_blend_l1_trains_the_share_and_needs_a_dual_model(small_cache, tmp_path, floor):
    """loss.blend_l1: reported beside the other terms (so logged); the share's output
    channel gets gradients from it alone (hole_l1, valid_l1, ssim off) — with
    model.share_floor too, where the floor sets every hole's output here (an occluder left
    of all of them); refused with one line for a model without the two fills."""
    from inpaint_online.config import ConfigError
    from inpaint_online.models import row_step
    from inpaint_online.train.trainer import Trainer
    cfg = tiny_config(small_cache, tmp_path, "model.prefill=dual", "model.use_depth=true",
                      "loss.blend_l1=1.0", "loss.hole_l1=0", "loss.valid_l1=0", "loss.ssim=0", *floor)
    t = Trainer(cfg, torch.device("cpu"))
    w0 = t.model.head.weight.detach().clone()
    b = SimpleNamespace(x=None, mask=torch.zeros(2, 1, 32, 32), y=torch.rand(2, 3, 32, 32),
                        depth=torch.rand(2, 1, 32, 32) * 0.3)
    b.mask[..., 8:24, 12:20] = 1
    b.depth[..., :, :12] += 0.6                   # an occluder left of the holes
    b.x = b.y * (1 - b.mask)
    if floor:
        assert bool((row_step(b.mask, b.depth) > 0.3)[b.mask > 0.5].all())
    loss, parts = t.step(b)
    assert parts["blend_l1"] > 0 and loss == pytest.approx(float(parts["blend_l1"]))
    moved = (t.model.head.weight.detach() - w0).flatten(1).abs().sum(1)
    assert moved[3] > 0 and torch.all(moved[:3] == 0)       # only the share learned
    with pytest.raises(ConfigError, match=r"loss.blend_l1 scores the blend of a model given both "
                                          r"fills: it needs model.prefill dual"):
        tiny_config(small_cache, tmp_path, "loss.blend_l1=1.0")


def test_model_takes_any_size_and_the_composite_keeps_known_pixels():
    net = GatedUNet(ModelConfig(channels=8, levels=3, blocks=0, dilations=(2,)))
    x, m = torch.rand(2, 3, 37, 53), (torch.rand(2, 1, 37, 53) > 0.8).float()
    pred = net(x * (1 - m), m)
    assert pred.shape == x.shape
    out = composite(x * (1 - m), m, pred)
    assert torch.equal(out[(1 - m).expand_as(x) > 0], (x * (1 - m))[(1 - m).expand_as(x) > 0])
    with pytest.raises(ValueError, match="use_depth"):
        GatedUNet(ModelConfig(channels=8, use_depth=True))(x, m)


DDP_SCRIPT = """
import sys, json, os, torch
sys.path.insert(0, {tests!r})
from conftest import tiny_config
from inpaint_online.train import train
cfg = tiny_config({cache!r}, {out!r}, "train.steps=4", "train.val_every=4", "train.ckpt_every=4")
res = train(cfg, progress=False)
rank = int(os.environ["RANK"])
sd = res.model.state_dict()
json.dump({{"rank": rank, "world": int(os.environ["WORLD_SIZE"]), "step": res.step,
           "sum": [float(v.double().sum()) for v in sd.values()]}},
          open(os.path.join({out!r}, f"rank{{rank}}.json"), "w"))
"""


def test_ddp_two_processes_gloo_train_in_step(small_cache, tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT.format(tests=str(ROOT / "tests"), cache=str(small_cache), out=str(tmp_path)))
    env = dict(os.environ, INPAINT_DDP_BACKEND="gloo", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        "--master_port=0", "--rdzv_backend=c10d", "--rdzv_endpoint=localhost:0",
                        str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [x["world"] for x in ranks] == [2, 2] and [x["step"] for x in ranks] == [4, 4]
    assert ranks[0]["sum"] == ranks[1]["sum"]            # DDP kept the replicas identical
    ck = load_checkpoint(tmp_path / "t" / "checkpoints" / "last.pt")
    assert ck["step"] == 4
    assert [float(v.double().sum()) for v in ck["model"].values()] == ranks[0]["sum"]


def test_prefetcher_yields_the_collated_stream_from_its_start_step(small_cache, tmp_path):
    from torch.utils.data import DataLoader

    from inpaint_online.stream import Prefetcher, StreamSampler
    cfg = tiny_config(small_cache, tmp_path)
    m = open_cache(small_cache)
    ds = CacheDataset(m, m.samples(), cfg.data)
    collate = WarpCollate(cfg.warp, cfg.collate, seed=1)
    loader = DataLoader(ds, batch_size=4, sampler=StreamSampler(len(ds), seed=1, start=8))
    (b, wait), = [next(iter(Prefetcher(loader, collate, start_step=2)))]
    cpu = next(iter(DataLoader(ds, batch_size=4, sampler=StreamSampler(len(ds), seed=1, start=8))))
    assert torch.equal(b.mask, collate(cpu, step=2).mask) and wait >= 0


@pytest.mark.cuda
def test_cuda_training_with_amp_and_the_side_stream_prefetcher(small_cache, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    res = train(tiny_config(small_cache, tmp_path, "run.device=cuda", "train.amp=bf16",
                            "data.num_workers=2"), progress=False)
    assert res.step == 6 and all(torch.isfinite(torch.tensor(r["loss"])) for r in res.history)
    res16 = train(tiny_config(small_cache, tmp_path, "run.device=cuda", "train.amp=fp16",
                              "run.name=fp16"), progress=False)
    assert res16.val and res16.val[-1]["psnr_hole"] > 5


@pytest.mark.skipif(__import__("shutil").which("cc") is None, reason="torch.compile needs a C compiler on CPU")
def test_compiled_training_saves_plain_weights(small_cache, tmp_path):
    res = train(tiny_config(small_cache, tmp_path, "train.compile=true", "train.steps=2"), progress=False)
    ck = load_checkpoint(tmp_path / "t" / "checkpoints" / "last.pt")
    assert res.step == 2 and not any(k.startswith("_orig_mod") for k in ck["model"])
    GatedUNet(ModelConfig(**{k: tuple(v) if isinstance(v, list) else v
                             for k, v in ck["model_config"].items()})).load_state_dict(ck["model"])


def test_resume_without_config_uses_the_runs_saved_config(small_cache, tmp_path, capsys):
    main = cli_main()
    base = ["--quiet", f"data.cache_dir={small_cache}", f"run.out_dir={tmp_path}", "run.name=r",
            "data.crop=48", "data.num_workers=0", "data.batch_size=2", "data.val_count=2",
            "model.channels=8", "model.levels=2", "model.blocks=0", "model.dilations=[2]",
            "train.steps=4", "train.val_every=2", "train.log_every=1"]
    assert main([*base, "train.stop_at=2"]) == 0
    assert main(["--quiet", "--resume", f"run.out_dir={tmp_path}", "run.name=r"]) == 0
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["step"] == 4


def test_perceptual_term_needs_local_vgg_weights_and_trains(small_cache, tmp_path):
    from torchvision.models import vgg16

    from inpaint_online.losses import VGG16_URL
    with pytest.raises(ConfigError, match="vgg16-397923af.pth"):
        tiny_config(small_cache, tmp_path, "loss.perceptual=0.1")
    torch.manual_seed(0)
    feats = {f"features.{k}": v for k, v in vgg16(weights=None).features[:16].state_dict().items()}
    torch.save(feats, tmp_path / "vgg.pth")                     # random stand-in weights
    cfg = tiny_config(small_cache, tmp_path, "loss.perceptual=0.1", f"loss.perceptual_weights={tmp_path / 'vgg.pth'}")
    batch = fixed_batch(small_cache, cfg)
    trainer = Trainer(cfg, torch.device("cpu"))
    _, parts = trainer.step(batch)
    assert parts["perceptual"] > 0
    before = [p.clone() for p in trainer.loss.vgg.parameters()]
    trainer.step(batch)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.loss.vgg.parameters()))   # frozen
    (tmp_path / "bad.pth").write_bytes(b"xx")
    with pytest.raises(ValueError, match="cannot read VGG16 weights"):
        Trainer(tiny_config(small_cache, tmp_path, "loss.perceptual=0.1",
                            f"loss.perceptual_weights={tmp_path / 'bad.pth'}"), torch.device("cpu"))
    assert VGG16_URL.endswith("vgg16-397923af.pth")


def test_a_config_that_makes_too_few_holes_is_flagged(small_cache, tmp_path, caplog):
    res = train(tiny_config(small_cache, tmp_path, "collate.min_hole_px=100000", "collate.retries=0",
                            "train.steps=1"), progress=False)
    assert res.history[0]["few_holes"] == 1.0 and 0 <= res.history[0]["hole_fraction"] < 1
    assert "fewer than collate.min_hole_px=100000" in caplog.text and "warp.level" in caplog.text


def test_a_cache_whose_depth_files_are_gone_is_a_clear_error(small_cache, tmp_path, capsys):
    import shutil
    broken = tmp_path / "cache"
    shutil.copytree(small_cache, broken)
    shutil.rmtree(broken / "depth")
    main = cli_main()
    for workers in ("0", "2"):
        assert main(["--quiet", f"data.cache_dir={broken}", f"run.out_dir={tmp_path / workers}",
                     "data.val_fraction=0", f"data.num_workers={workers}", "data.crop=32"]) == 2
        err = capsys.readouterr().err
        assert f"error: {broken}: none of the" in err and "Traceback" not in err


def test_sigterm_saves_a_checkpoint_that_resumes(small_cache, tmp_path):
    import signal
    import time
    args = ["--quiet", f"data.cache_dir={small_cache}", f"run.out_dir={tmp_path}", "run.name=s",
            "data.crop=32", "data.num_workers=0", "data.batch_size=2", "data.val_count=2",
            "model.channels=8", "model.levels=2", "model.blocks=0", "model.dilations=[2]",
            "train.steps=100000", "train.log_every=1", "train.val_every=100000", "train.ckpt_every=100000"]
    p = subprocess.Popen([sys.executable, str(ROOT / "train_online.py"), *args], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "s" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, err[-2000:]          # saved, but not a finished run
    step = load_checkpoint(tmp_path / "s" / "checkpoints" / "last.pt")["step"]
    assert 3 <= step < 100000 and "continue with --resume" in err
    assert f"stopped by SIGTERM at step {step}; exit code 143" in err
    main = cli_main()
    with open(metrics, "a") as f:                 # rows a hard kill logged after the checkpoint
        f.write(json.dumps({"kind": "train", "step": step + 1, "loss": 9.9}) + "\n" + '{"kind": "tr')
    assert main(["--quiet", "--resume", f"run.out_dir={tmp_path}", "run.name=s", f"train.stop_at={step + 2}"]) == 0
    assert load_checkpoint(tmp_path / "s" / "checkpoints" / "last.pt")["step"] == step + 2
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines() if '"train"' in x]
    assert steps == list(range(1, step + 3))      # no duplicates, no torn line


def test_old_collate_mode_key_gets_a_message_naming_its_replacement(tmp_path):
    from inpaint_online.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="collate.method"):
        load_config(None, ["collate.mode=bilinear"])


def test_the_trainer_says_what_it_does_and_its_flags_mix_with_overrides(small_cache, tmp_path, capsys, caplog):
    import yaml
    main = cli_main()
    base = [f"data.cache_dir={small_cache}", f"run.out_dir={tmp_path}", "run.device=cpu",
            "data.crop=48", "data.num_workers=0", "data.batch_size=4", "data.val_count=4",
            "model.channels=8", "model.levels=2", "model.blocks=0", "model.dilations=[2]",
            "train.log_every=1", "train.val_every=2", "train.ckpt_every=2"]
    # overrides before and after the flags
    assert main(["run.name=p", "--print-config", "train.steps=8", *base]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["run"]["name"] == "p" and printed["train"]["steps"] == 8
    assert not (tmp_path / "p").exists()
    # a dry run trains one batch and leaves nothing behind
    assert main(["--dry-run", "run.name=d", *base]) == 0
    assert capsys.readouterr().out.startswith("dry run: built the data stream")
    assert not (tmp_path / "d").exists()
    # the start of a run says what it is about to do
    with caplog.at_level("INFO"):
        assert main(["run.name=r", *base, "--quiet", "train.steps=2"]) == 0
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "device cpu, world size 1, AMP off, torch.compile off" in text
    assert "data: " in text and "held-out sources" in text and "M parameters" in text
    assert "LOW-QUALITY fallback backend" in text and f"writing to {tmp_path / 'r'}" in text
    # --resume of a finished run: nothing to do, said so
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main(["run.name=r", "--resume", *base, "--quiet", "train.steps=2"]) == 0
    assert any("finished at step 2 of train.steps=2: nothing to do" in r.getMessage()
               for r in caplog.records)


def test_init_from_starts_a_run_from_another_runs_weights(small_cache, tmp_path):
    from inpaint_online.checkpoint import CheckpointError
    a = train(tiny_config(small_cache, tmp_path, "run.name=a", "train.steps=4"), progress=False)
    src = tmp_path / "a" / "checkpoints" / "last.pt"
    # lr ~ 0: after one step the weights are still the source's (a fresh init would differ)
    b = train(tiny_config(small_cache, tmp_path, "run.name=b", "train.steps=1", "optim.lr=1e-30",
                          f"train.init_from={src}"), progress=False)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6) for k in sa)
    fresh = train(tiny_config(small_cache, tmp_path, "run.name=c", "train.steps=1", "optim.lr=1e-30"),
                  progress=False).model.state_dict()
    assert not all(torch.allclose(sa[k].float(), fresh[k].float(), atol=1e-6) for k in sa)
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["step"] == 1
    with pytest.raises(CheckpointError, match="checkpoint is for another model: model.channels"):
        train(tiny_config(small_cache, tmp_path, "run.name=d", "model.channels=12",
                          f"train.init_from={src}"), progress=False)


def test_gradient_accumulation_averages_the_batches_gradients(small_cache, tmp_path):
    cfg = tiny_config(small_cache, tmp_path, "optim.grad_clip=0")
    b1 = fixed_batch(small_cache, cfg)
    m = open_cache(small_cache)
    ds = CacheDataset(m, m.samples(), cfg.data)
    items = [ds[(i + 4, 90 + i)] for i in range(4)]
    b2 = WarpCollate(cfg.warp, cfg.collate)({k: torch.stack([it[k] for it in items]) for k in items[0]}, step=1)

    def grads(batches):
        t = Trainer(cfg, torch.device("cpu"))
        t.opt.step = lambda *a, **k: None          # keep the gradients, skip the update
        loss, _ = t.step(batches)
        return loss, [p.grad.clone() for p in t.model.parameters()]
    (l1, g1), (l2, g2), (l12, g12) = grads(b1), grads(b2), grads([b1, b2])
    assert torch.allclose(l12, (l1 + l2) / 2)
    assert all(torch.allclose(c, (a + b) / 2, atol=1e-7) for a, b, c in zip(g1, g2, g12))


def test_resume_with_gradient_accumulation_is_bit_identical(small_cache, tmp_path):
    once = train(tiny_config(small_cache, tmp_path / "a", "train.accum_steps=2", "train.steps=4"),
                 progress=False)
    train(tiny_config(small_cache, tmp_path / "b", "train.accum_steps=2", "train.steps=4",
                      "train.stop_at=2"), progress=False)
    resumed = train(tiny_config(small_cache, tmp_path / "b", "train.accum_steps=2", "train.steps=4"),
                    resume=True, progress=False)
    a, b = once.model.state_dict(), resumed.model.state_dict()
    assert once.step == resumed.step == 4 and all(torch.equal(a[k], b[k]) for k in a)
    plain = train(tiny_config(small_cache, tmp_path / "c", "train.steps=4"), progress=False)
    assert not all(torch.equal(a[k], plain.model.state_dict()[k]) for k in a)   # 2 batches a step


def test_ema_of_the_weights_is_tracked_validated_saved_and_resumed(small_cache, tmp_path):
    from inpaint_online.inference import load_model
    cfg = tiny_config(small_cache, tmp_path, "train.ema_decay=0.8")
    batch = fixed_batch(small_cache, cfg)
    t = Trainer(cfg, torch.device("cpu"))
    want = [p.detach().clone() for p in t.model.parameters()]       # the EMA starts at the weights
    for _ in range(3):
        t.step(batch)
        want = [0.8 * e + 0.2 * p.detach() for e, p in zip(want, t.model.parameters())]
    assert all(torch.allclose(e, w, atol=1e-6) for e, w in zip(t.ema.parameters(), want))
    assert not all(torch.equal(e, p) for e, p in zip(t.ema.parameters(), t.model.parameters()))

    once = train(tiny_config(small_cache, tmp_path / "a", "train.ema_decay=0.8"), progress=False)
    assert "ema_psnr_hole" in once.val[-1] and "psnr_hole" in once.val[-1]
    ck_dir = tmp_path / "a" / "t" / "checkpoints"
    ck = load_checkpoint(ck_dir / "last.pt")
    assert "model_ema" in ck and ck["best"]["ema_step"] is not None
    best_ema = load_model(ck_dir / "best_ema.pt")                  # loads as a plain model
    assert set(best_ema.state_dict()) == set(ck["model"])
    train(tiny_config(small_cache, tmp_path / "b", "train.ema_decay=0.8", "train.stop_at=3"),
          progress=False)
    resumed = train(tiny_config(small_cache, tmp_path / "b", "train.ema_decay=0.8"), resume=True,
                    progress=False)
    cb = load_checkpoint(tmp_path / "b" / "t" / "checkpoints" / "last.pt")
    assert all(torch.equal(ck["model_ema"][k], cb["model_ema"][k]) for k in ck["model_ema"])
    assert resumed.step == once.step == 6


def test_val_sources_hold_out_exactly_the_named_sources(small_cache, tmp_path):
    from inpaint_online.stream import split_records
    recs = open_cache(small_cache).samples()
    tr, va = split_records(recs, 0.25, ["coffee.png", "bik*"])
    assert {r["rel"] for r in va} == {"coffee.png", "bikes.mp4"}
    assert not {r["rel"] for r in tr} & {"coffee.png", "bikes.mp4"} and len(tr) + len(va) == len(recs)
    with pytest.raises(ValueError, match="data.val_sources: 'nope\\*' matches no cached source"):
        split_records(recs, 0.25, ["nope*"])
    with pytest.raises(ValueError, match="holds out every cached source"):
        split_records(recs, 0.25, ["*"])
    res = train(tiny_config(small_cache, tmp_path, "data.val_sources=[chelsea.png]", "train.steps=2",
                            "train.val_every=2"), progress=False)
    assert res.val and res.val[0]["step"] == 0


def test_validation_keeps_the_samples_whose_holes_cover_most_texture(small_cache, tmp_path):
    """val_pool x val_count drawn, the textured ones kept, held-out sources in turn; the
    kept samples are exactly those of the pool (the second pass re-makes them bit for bit)."""
    from inpaint_online.cache import open_cache
    from inpaint_online.stream import split_records
    from inpaint_online.train import hole_texture, pick_in_turns, validation_batches
    m = open_cache(small_cache)
    cfg = tiny_config(small_cache, tmp_path, "data.val_count=6", "data.val_pool=3",
                      "data.val_fraction=0.5")
    _, val = split_records(m.samples(), cfg.data.val_fraction, cfg.data.val_sources)
    dev = torch.device("cpu")
    kept = validation_batches(cfg, m, val, dev)
    assert [len(b) for b in kept] == [4, 2]
    pool = validation_batches(tiny_config(small_cache, tmp_path, "data.val_count=18",
                                          "data.val_pool=1", "data.val_fraction=0.5"), m, val, dev)
    tex = torch.cat([hole_texture(b) for b in pool])
    names = [n for b in pool for n in b.meta["names"]]
    sources = [n.split(" ")[0].split("#")[0] for n in names]
    picks = pick_in_turns(tex.tolist(), sources, 6)
    assert len(set(sources)) >= 2 and len({sources[i] for i in picks}) == len(set(sources))
    for key in ("x", "mask", "y", "depth"):
        assert torch.equal(torch.cat([getattr(b, key) for b in kept]),
                           torch.cat([getattr(b, key) for b in pool])[picks])
    assert [n for b in kept for n in b.meta["names"]] == [names[i] for i in picks]
    assert torch.equal(torch.cat([b.params.divergence for b in kept]),
                       torch.cat([b.params.divergence for b in pool])[picks])
    # more texture in the kept holes than in the pool on average, and than the first drawn
    assert tex[picks].mean() > tex.mean() and tex[picks].mean() > tex[:6].mean()
    # deterministic
    again = validation_batches(cfg, m, val, dev)
    assert all(torch.equal(a.mask, b.mask) and torch.equal(a.y, b.y) for a, b in zip(kept, again))


def test_pick_in_turns_alternates_sources_and_puts_holeless_samples_last():
    from inpaint_online.train import pick_in_turns
    scores = [5.0, 9.0, 1.0, 0.0, 7.0, 3.0, 0.0]
    srcs = ["a", "a", "a", "b", "b", "b", "c"]
    assert pick_in_turns(scores, srcs, 2) == [1, 4]            # best of a, best of b
    assert pick_in_turns(scores, srcs, 4) == [0, 1, 4, 5]      # second round; c has nothing
    assert pick_in_turns(scores, srcs, 7) == list(range(7))
    assert pick_in_turns(scores, srcs, 6) == [0, 1, 2, 3, 4, 5]  # one of the zeros, the first


def test_hole_texture_is_zero_on_flat_holes_and_grows_with_detail():
    from inpaint_online.stream import Batch
    from inpaint_online.train import hole_texture
    y = torch.full((2, 3, 32, 32), 0.5)
    y[1, :, :, ::2] = 0.9                                     # stripes under sample 1's holes
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:24, 8:16] = 1
    b = Batch(x=y * (1 - mask), mask=mask, y=y, depth=torch.zeros_like(mask), params=None, meta={})
    t = hole_texture(b)
    assert t[0] == 0 and t[1] == pytest.approx(128 * 0.4)   # 128 hole px, |dx| = 0.4


def test_step_0_is_a_best_candidate_and_the_summary_says_when_training_did_not_help(
        small_cache, tmp_path, capsys):
    """A run whose steps never beat the untrained model hands back the untrained model as
    best.pt and says so loudly, next to the best classical fill on the same samples."""
    from inpaint_online.train.cli import main
    base = [f"data.cache_dir={small_cache}", f"run.out_dir={tmp_path}", "run.device=cpu",
            "data.crop=48", "data.num_workers=0", "data.batch_size=4", "data.val_count=4",
            "data.val_fraction=0.25", "model.channels=8", "model.levels=2", "model.blocks=0",
            "model.dilations=[2]", "train.steps=2", "train.val_every=1", "train.ckpt_every=1"]
    assert main(["--quiet", "run.name=z", "optim.lr=1e-30", *base]) == 0
    out, err = capsys.readouterr()
    best = load_checkpoint(tmp_path / "z" / "checkpoints" / "best.pt")
    b = best["best"]
    assert best["step"] == 0 and b["step"] == 0
    assert b["first_guess"] == b["value"] and b["classical_name"] in (
        "diffusion", "push-pull", "background push-pull", "background copy", "row interpolation",
        "opencv telea", "opencv navier-stokes")
    assert f"best.pt: step 0, psnr_hole {b['value']:.3f} dB (untrained first guess" in out
    assert "WARNING: no step scored above the untrained model: best.pt is the untrained model" in err
    # the references are in TensorBoard next to every validation score
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ev = EventAccumulator(str(tmp_path / "z" / "tb"))
    ev.Reload()
    tags = ev.Tags()["scalars"]
    assert "score/first_guess_psnr_hole" in tags and "score/best_classical_psnr_hole" in tags
    assert [e.step for e in ev.Scalars("score/best_classical_psnr_hole")] == [0, 1, 2]


def test_max_minutes_stops_validates_and_resumes(small_cache, tmp_path, caplog):
    cfg = tiny_config(small_cache, tmp_path, "train.steps=500", "train.val_every=1000",
                      "train.ckpt_every=1000", "train.max_minutes=0.001")   # 60 ms
    with caplog.at_level("WARNING", logger="inpaint_online.train"):
        res = train(cfg, progress=False)
    assert 0 < res.step < 500
    assert [r["step"] for r in res.val] == [0, res.step]          # scored where it stopped
    assert load_checkpoint(tmp_path / "t" / "checkpoints" / "last.pt")["step"] == res.step
    assert any(f"stopped after train.max_minutes=0.001 at step {res.step} of 500" in r.message
               for r in caplog.records)
    more = train(tiny_config(small_cache, tmp_path, "train.steps=500", "train.val_every=1000",
                             "train.ckpt_every=1000", "train.max_minutes=0.001"),
                 resume=True, progress=False)
    assert more.step > res.step
    with pytest.raises(ConfigError, match="train.max_minutes must be >= 0"):
        tiny_config(small_cache, tmp_path, "train.max_minutes=-1")



def test_tensorboard_keeps_rising_scores_apart_from_falling_losses():
    from inpaint_online.train.rundir import tb_tag
    assert tb_tag("train", "ssim") == "train_score/ssim_around_holes"
    assert tb_tag("train", "hole_l1") == "loss/hole_l1" and tb_tag("val", "ssim_hole") == "score/ssim_hole"


def test_a_layered_validation_set_picks_best_pt_by_the_weaker_margin(small_cache, tmp_path, capsys):
    """data.val_layered: a second, all-layered validation set is scored at every validation
    step with its own references, and best.pt is the step whose weaker margin over the two
    sets' best classical fills is largest (not the plain score's best step)."""
    import math

    from inpaint_online.train.cli import main
    base = [f"data.cache_dir={small_cache}", f"run.out_dir={tmp_path}", "run.device=cpu",
            "data.crop=48", "data.num_workers=0", "data.batch_size=4", "data.val_count=4",
            "data.val_fraction=0.5", "model.channels=8", "model.levels=2", "model.blocks=0",
            "model.dilations=[2]", "model.prefill=dual", "train.steps=4", "train.val_every=1",
            "train.ckpt_every=1", "optim.lr=0.01", "optim.warmup_steps=1", "train.ema_decay=0.5"]
    assert main(["--quiet", "run.name=l", "data.val_layered=true", *base]) == 0
    out, _ = capsys.readouterr()
    rows = [json.loads(line) for line in (tmp_path / "l" / "metrics.jsonl").read_text().splitlines()]
    plain = {r["step"]: r["psnr_hole"] for r in rows if r["kind"] == "val"}
    lay = {r["step"]: r["psnr_hole"] for r in rows if r["kind"] == "val_layered"}
    assert sorted(plain) == sorted(lay) == [0, 1, 2, 3, 4]
    ck = load_checkpoint(tmp_path / "l" / "checkpoints" / "best.pt")
    b = ck["best"]
    L = b["layered"]
    assert L["classical_name"] == max(L["classical_scores"], key=L["classical_scores"].get)
    assert L["first_guess"] == lay[0] and b["first_guess"] == plain[0]
    margin = {s: min(plain[s] - b["classical"], lay[s] - L["classical"]) for s in plain}
    want = max(sorted(margin), key=lambda s: margin[s])       # the first of equal ones
    assert ck["step"] == b["step"] == L["step"] == want
    assert math.isclose(b["margin"], margin[want]) and b["value"] == plain[want]
    assert L["value"] == lay[want] and L["latest"] == {"step": want, "value": lay[want]}
    last = load_checkpoint(tmp_path / "l" / "checkpoints" / "last.pt")["best"]
    assert last["layered"]["latest"] == {"step": 4, "value": lay[4]}
    assert max(plain, key=plain.get) != want          # the plain score alone picks another
    # the two sets are different samples: layered ones have a cut-out in front
    assert plain[0] != lay[0]
    assert "; layered samples" in out and f"step {want}," in out
    # the EMA is chosen the same way, on its own scores
    ema = {r["step"]: r["psnr_hole"] for r in rows if r["kind"] == "val_ema"}
    ema_l = {r["step"]: r["psnr_hole"] for r in rows if r["kind"] == "val_layered_ema"}
    em = {s: min(ema[s] - b["classical"], ema_l[s] - L["classical"]) for s in ema}
    assert last["ema_step"] == max(sorted(em), key=lambda s: em[s])
    assert math.isclose(last["ema_margin"], max(em.values()))
    # stereo --fill auto reads both sets: the model only where it won both
    from inpaint_online.inference import choose_fill
    kind, line = choose_fill("auto", ck)
    bg = "background push-pull"
    won = b["value"] >= b["classical_scores"][bg] and L["value"] >= L["classical_scores"][bg]
    assert kind == ("model" if won else "background") and "on its layered samples" in line
    # a run validating on a fixed dataset's eval split has no depth to layer
    with pytest.raises(ConfigError, match="data.val_layered makes layered samples from the depth cache"):
        from inpaint_online.train.loop import _datasets
        _datasets(tiny_config(small_cache, tmp_path, "data.source=folder",
                              f"data.folder={tmp_path}", "data.val_from=folder",
                              "data.val_layered=true"))


def test_a_run_resumed_with_val_layered_added_scores_both_sets(small_cache, tmp_path):
    """Turning data.val_layered on for a resumed run: the layered set's references are made
    at the first validation after the resume (no KeyError), and best.pt goes by the margin."""
    common = ["data.val_fraction=0.5", "model.prefill=dual", "train.val_every=1",
              "train.ckpt_every=1"]
    train(tiny_config(small_cache, tmp_path, *common, "train.steps=3", "train.stop_at=1"),
          progress=False)
    res = train(tiny_config(small_cache, tmp_path, *common, "train.steps=3",
                            "data.val_layered=true"), resume=True, progress=False)
    assert res.step == 3 and [r["step"] for r in res.val] == [2, 3]
    assert all("layered_psnr_hole" in r for r in res.val)
    lay = res.best["layered"]
    assert lay["classical_name"] in lay["classical_scores"] and "margin" in res.best


def test_the_few_holes_warning_gives_the_advice_that_applies(caplog):
    """Streaming: raise the shifts; a fixed dataset: its holes are what they are (export
    with larger shifts or crop larger). One line each; nothing when most samples have holes."""
    from inpaint_online.train.loop import _warn_few_holes

    def cfg(source):
        return SimpleNamespace(data=SimpleNamespace(source=source, crop=96),
                               collate=SimpleNamespace(min_hole_px=50))
    assert _warn_few_holes({"few_holes": 0.5}, 3, cfg("stream")) is False and not caplog.records
    with caplog.at_level("WARNING"):
        assert _warn_few_holes({"few_holes": 0.75}, 3, cfg("stream")) is True
        assert _warn_few_holes({"few_holes": 1.0}, 4, cfg("folder")) is True
    assert [r.getMessage() for r in caplog.records] == [
        "step 3: 75% of the batch has fewer than collate.min_hole_px=50 hole pixels per frame: "
        "the shifts are small for these frames. Raise warp.level or data.scale_range (shifts are "
        "% of the frame width), or lower collate.min_hole_px",
        "step 4: 100% of the batch has fewer than collate.min_hole_px=50 hole pixels per frame: "
        "the fixed dataset's holes are small in these 96-px crops. Export with larger shifts "
        "(warp.level) or train with a larger data.crop; collate.min_hole_px only sets this "
        "warning's threshold here"]

"""The training loop: setup, loop, validation, checkpoints (nanoGPT's shape).

Data: :class:`~inpaint_online.data.CacheDataset` crops in DataLoader workers →
:class:`~inpaint_online.collate.Prefetcher` runs :class:`~inpaint_online.collate.WarpCollate`
on the device one batch ahead → model step. DDP is the few lines marked ``# DDP``:
``torchrun`` sets the environment, every rank reads its own shard of the data stream and
draws its own warp parameters, rank 0 validates, logs and writes checkpoints.

Reproducibility: model init from ``run.seed``; the n-th sample of a rank and the warp
parameters of step s come from seeds derived from (seed, rank, n) and (seed, rank, s). A
checkpoint holds the step, so ``--resume`` continues the identical stream: on CPU, N steps
in one go and N/2 + resume + N/2 give bit-identical weights (tested).
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import math
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from .cache import open_cache
from .cache.store import entry_label
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, ConfigError
from .devices import amp_dtype, resolve_device
from .fsutil import atomic_write_bytes, sweep_temp
from .losses import InpaintLoss, batch_scores, mean_scores
from .models import build_model, composite, model_config_dict
from .stream import (
    Batch,
    CacheDataset,
    Prefetcher,
    StreamSampler,
    WarpCollate,
    make_loader,
    split_records,
)

__all__ = ["train", "TrainResult", "Trainer", "validation_batches", "evaluate"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    step: int
    model: torch.nn.Module
    history: list[dict] = field(default_factory=list)      # logged train rows
    val: list[dict] = field(default_factory=list)          # validation rows
    run_dir: Path | None = None


def lr_lambda(cfg: Config):
    o, steps = cfg.optim, cfg.train.steps

    def f(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        t = min(1.0, (step - o.warmup_steps) / max(1, steps - o.warmup_steps))
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return f


class Trainer:
    """Model, optimiser, schedule, AMP scaler and the loss: one optimiser step per call."""

    def __init__(self, cfg: Config, device: torch.device, ddp_rank: int | None = None):
        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.run.seed)
        self.model = build_model(cfg.model).to(device)            # the raw module (saved)
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.optim.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.optim.lr, betas=cfg.optim.betas)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg))
        self.amp = amp_dtype(cfg.train.amp, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp == torch.float16)
        self.loss = InpaintLoss(cfg.loss)
        net = self.model
        if cfg.train.compile:
            net = torch.compile(net)
        if ddp_rank is not None:                                                   # DDP
            net = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None)
        self.net = net
        self.ema = None
        if cfg.train.ema_decay > 0:
            self.reset_ema()

    def reset_ema(self) -> None:
        """The EMA starts as (a copy of) the current weights."""
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)

    @torch.no_grad()
    def update_ema(self) -> None:
        d = self.cfg.train.ema_decay
        ema = list(self.ema.parameters())
        torch._foreach_lerp_(ema, [p.detach() for p in self.model.parameters()], 1.0 - d)
        for b_ema, b in zip(self.ema.buffers(), self.model.buffers()):
            b_ema.copy_(b)

    def autocast(self):
        if self.amp is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def predict(self, batch: Batch, net=None) -> torch.Tensor:
        with self.autocast():
            return (net or self.net)(batch.x, batch.mask, batch.depth)

    def step(self, batch: Batch | list[Batch]) -> tuple[torch.Tensor, dict]:
        """One optimiser step on a batch, or on several (``train.accum_steps``): their
        gradients are summed with weight 1/k, so k batches of B act as one of k·B. Under DDP
        only the last backward all-reduces."""
        self.model.train()
        batches = batch if isinstance(batch, list) else [batch]
        k = len(batches)
        self.opt.zero_grad(set_to_none=True)
        total, parts = 0.0, {}
        for i, b in enumerate(batches):
            sync = i == k - 1 or not hasattr(self.net, "no_sync")
            with (nullcontext() if sync else self.net.no_sync()):                    # DDP
                pred = self.predict(b)
                loss, p = self.loss(pred, b)
                self.scaler.scale(loss / k).backward()
            total = total + loss.detach() / k
            for name, v in p.items():
                parts[name] = parts.get(name, 0.0) + v.detach() / k
        loss = total
        if self.cfg.optim.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            parts["grad_norm"] = torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        if self.ema is not None:
            self.update_ema()
        return loss.detach(), parts

    def state(self, step: int, best: dict) -> dict:
        return {"step": step, "model": self.model.state_dict(),
                "model_config": model_config_dict(self.cfg.model),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "scaler": self.scaler.state_dict(), "config": self.cfg.to_dict(), "best": best,
                "rng": {"torch": torch.get_rng_state()},
                **({"model_ema": self.ema.state_dict()} if self.ema is not None else {})}

    def load_state(self, ck: dict) -> None:
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        torch.set_rng_state(ck["rng"]["torch"])
        if self.ema is not None:
            if "model_ema" in ck:
                self.ema.load_state_dict(ck["model_ema"])
            else:                              # train.ema_decay was turned on for the resume
                self.reset_ema()


def validation_batches(cfg: Config, manifest, records: list[dict], device) -> list[Batch]:
    """The fixed validation set: same crops and warp parameters in every run with this
    config and cache (seeds from ``data.val_seed``), no jitter, no mask augmentation.

    ``data.val_pool`` x ``data.val_count`` samples are drawn; the ``val_count`` kept are those
    whose holes cover the most texture (:func:`hole_texture`: a hole on a flat wall is filled
    by any method and measures nothing), taken from the held-out sources in turn so that every
    source is represented. Two passes (score, then re-make the chosen batches: the collate is
    deterministic), so only the kept samples stay in memory."""
    if not records or cfg.data.val_count < 1:
        return []
    ds = CacheDataset(manifest, records, cfg.data, train=False)
    collate = WarpCollate(cfg.warp, cfg.collate, device=device, seed=cfg.data.val_seed,
                          augment=False)
    bs, count = cfg.data.batch_size, cfg.data.val_count
    pool = count * cfg.data.val_pool

    def make(start: int) -> Batch:
        items = [ds[(i % len(ds), cfg.data.val_seed * 1_000_003 + i)]
                 for i in range(start, min(pool, start + bs))]
        cpu = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        return collate(cpu, step=start)

    if pool == count:
        chosen = list(range(count))
    else:
        scores, sources = [], []
        for start in range(0, pool, bs):
            b = make(start)
            scores += hole_texture(b).tolist()
            sources += [ds.table[int(ds.starts[i])]["rel"] for i in b.meta["index"].tolist()]
        chosen = pick_in_turns(scores, sources, count)
    out, pending = [], []
    for start in range(0, pool, bs):
        want = [i - start for i in chosen if start <= i < start + bs]
        if want:
            pending.append(make(start).take(want))
        while pending and (sum(len(p) for p in pending) >= bs or start + bs >= pool):
            b = Batch.cat(pending)
            pending = [b.take(list(range(bs, len(b))))] if len(b) > bs else []
            b = b.take(list(range(min(bs, len(b)))))
            b.meta["names"] = batch_names(ds, b)
            out.append(b)
    return out


def hole_texture(batch: Batch) -> torch.Tensor:
    """``(B,)``: how much texture the holes of each sample cover — the sum over hole pixels
    of the target's local gradient magnitude (gray, |dx| + |dy|, 3x3 mean); frames of a clip
    add up. Large when wide holes lie on detail, small for few holes or holes on flat areas."""
    import torch.nn.functional as F
    y, m = batch.y, batch.mask
    if y.dim() == 5:
        y, m = y.flatten(0, 1), m.flatten(0, 1)
    g = y.float().mean(1, keepdim=True)
    gx = F.pad((g[..., :, 1:] - g[..., :, :-1]).abs(), (0, 1, 0, 0))
    gy = F.pad((g[..., 1:, :] - g[..., :-1, :]).abs(), (0, 0, 0, 1))
    tex = F.avg_pool2d(gx + gy, 3, 1, 1, count_include_pad=False)
    return (tex * m.float()).flatten(1).sum(1).view(len(batch), -1).sum(1)


def pick_in_turns(scores: list[float], sources: list[str], count: int) -> list[int]:
    """``count`` indices, sorted: each source's samples by descending score, sources taking
    turns (the source of the best remaining sample first in each round); samples with a zero
    score (no hole) only fill what is left, first drawn first. Ties keep the drawing order."""
    by_src: dict[str, list[int]] = {}
    for i in sorted(range(len(scores)), key=lambda i: (-scores[i], i)):
        by_src.setdefault(sources[i], []).append(i)
    queues = [q for q in by_src.values()]
    picks, zero = [], []
    while len(picks) < count and any(queues):
        for q in sorted((q for q in queues if q), key=lambda q: (-scores[q[0]], q[0])):
            if len(picks) == count:
                break
            i = q.pop(0)
            (picks if scores[i] > 0 else zero).append(i)
    return sorted(picks + sorted(zero)[:count - len(picks)])


@torch.no_grad()
def evaluate(trainer: Trainer, batches: list[Batch], model: torch.nn.Module | None = None) -> dict:
    """PSNR and SSIM inside the holes, PSNR over the full image, averaged over samples
    (frames, for clips; clips add ``temporal_error``, lower is better). ``model``: another
    set of weights (the EMA) than the trainer's."""
    model = model if model is not None else trainer.model
    was = model.training
    model.eval()
    rows = []
    for b in batches:
        out = composite(b.x, b.mask, trainer.predict(b, net=model).float().clamp(0, 1))
        rows.append(batch_scores(out, b.y, b.mask))
    model.train(was)
    return mean_scores(rows)


GRID_COLUMNS = ["input (holes magenta)", "prediction", "target", "|pred - target| x4",
                "zoom: input", "zoom: prediction", "zoom: target"]


def image_grid(batch: Batch, pred: torch.Tensor, n: int = 4,
               names: list[str] | None = None) -> torch.Tensor:
    """A labelled sheet ``(3, H', W')`` in [0, 1] of the ``n`` samples with the most hole
    pixels (for clips: the frames of the clip with the most): input with the holes in
    magenta | prediction (composited) | target | amplified error | the same zoomed on the
    densest holes. Row labels: source (``names``), view (left views were mirrored, as the
    model sees them), divergence, convergence, hole share."""
    from .pictures import error_tile, hole_overlay, sample_label, sheet, to_uint8, zoom_on_holes
    recs = batch.params.records()
    holes = batch.mask.flatten(1).sum(1)
    if pred.dim() == 5:                      # clips: the frames of the clip with most holes
        i = int(holes.argmax())
        out = composite(batch.x[i], batch.mask[i], pred[i].float().clamp(0, 1))
        items = [(batch.x[i, j], batch.mask[i, j], out[j], batch.y[i, j], f"frame {j}", i)
                 for j in range(out.shape[0])]
    else:
        pick = holes.argsort(descending=True)[:n].tolist()
        out = composite(batch.x, batch.mask, pred.float().clamp(0, 1))
        items = [(batch.x[i], batch.mask[i], out[i], batch.y[i], "", i) for i in pick]
    rows = []
    for x, m, o, y, extra, i in items:
        hole = m[0].detach().cpu().numpy() > 0
        label = sample_label(names[i] if names else "", recs[i], hole, extra)
        target, pr = to_uint8(y), to_uint8(o)
        tiles = [hole_overlay(target, hole), pr, target, error_tile(pr, target)]
        rows.append((label, tiles + zoom_on_holes(tiles[:3], hole)))
    grid = sheet(rows, GRID_COLUMNS)
    return torch.from_numpy(grid.copy()).permute(2, 0, 1).float() / 255


def batch_names(ds: CacheDataset, batch: Batch) -> list[str]:
    """The source (and frame) of each sample of a batch from ``ds``."""
    return [entry_label(ds.table[int(ds.starts[i])]) for i in batch.meta["index"].tolist()]


def hole_stats(batch: Batch, min_px: int) -> dict:
    """Mean hole fraction of a batch, and the share of samples (frames) with fewer than
    ``min_px`` hole pixels — the first thing to look at when a config makes too few holes."""
    m = batch.mask.flatten(0, 1) if batch.mask.dim() == 5 else batch.mask
    px = m.flatten(1).sum(1)
    return {"hole_fraction": m.mean().item(), "few_holes": (px < min_px).float().mean().item()}


def _setup_distributed():
    """``(rank, world, local_rank, owned)``; initialises the process group under torchrun
    (``owned``: this call did, so :func:`train` destroys it when it returns)."""  # DDP
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0, False
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return rank, world, local, False
    backend = "nccl" if torch.cuda.is_available() and os.environ.get("INPAINT_DDP_BACKEND") != "gloo" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend)
    return rank, world, local, True


def train(cfg: Config, *, resume: bool = False, progress: bool = True) -> TrainResult:
    rank, world, local, owned = _setup_distributed()
    try:
        return _train(cfg, resume, progress, rank, world, local)
    finally:
        if owned:
            # a process group left to the interpreter's exit tears down its threads in
            # arbitrary order: seen as "terminate called without an active exception"
            # (SIGABRT) after a finished run on a loaded machine
            dist.destroy_process_group()                                            # DDP


def _train(cfg: Config, resume: bool, progress: bool, rank: int, world: int,
           local: int) -> TrainResult:
    main = rank == 0
    ddp = world > 1
    if ddp and cfg.run.device == "auto" and os.environ.get("INPAINT_DDP_BACKEND") == "gloo":
        cfg.run.device = "cpu"
    device = resolve_device(cfg.run.device, local)
    run_dir = cfg.run_dir
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.pt"
    if last.exists() and not resume:
        raise ConfigError(f"{run_dir}: this run already has a checkpoint ({last}). Pass --resume "
                          "to continue it, or choose another run.name")
    if resume and not last.exists():
        raise ConfigError(f"--resume: no checkpoint at {last}")

    manifest = open_cache(cfg.data.cache_dir)
    train_recs, val_recs = split_records(manifest.samples(), cfg.data.val_fraction,
                                         cfg.data.val_sources)
    trainer = Trainer(cfg, device, ddp_rank=rank if ddp else None)
    start, best = 0, {"metric": cfg.train.best_metric, "value": None, "step": None}
    if cfg.train.init_from and not resume:
        # weights only: a fresh optimiser, schedule and step count (fine-tuning)
        init = load_checkpoint(cfg.train.init_from, expect_model=model_config_dict(cfg.model),
                               map_location=device)
        trainer.model.load_state_dict(init["model"])
        if trainer.ema is not None:
            trainer.reset_ema()
        if main:
            log.info("weights from %s (step %s of its run); optimiser and schedule start fresh",
                     cfg.train.init_from, init.get("step"))
    if resume:
        ck = load_checkpoint(last, expect_model=model_config_dict(cfg.model), map_location=device)
        _warn_config_changes(ck["config"], cfg.to_dict())
        trainer.load_state(ck)
        start, best = ck["step"], ck["best"]
        if start >= cfg.train.steps:
            if main:
                log.info("%s finished at step %d of train.steps=%d: nothing to do (raise "
                         "train.steps to train on)", run_dir, start, cfg.train.steps)
            return TrainResult(step=start, model=trainer.model, run_dir=None)
    if main:
        _describe_run(cfg, device, world, trainer, train_recs, val_recs, run_dir)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        sweep_temp(run_dir)
        sweep_temp(ckpt_dir)              # a checkpoint write a kill interrupted
        saved = cfg.to_dict()
        saved["train"]["stop_at"] = 0          # belongs to one invocation, not to the run
        atomic_write_bytes(run_dir / "config.yaml", yaml.safe_dump(saved, sort_keys=False).encode())

    bs = cfg.data.batch_size
    ds = CacheDataset(manifest, train_recs, cfg.data, train=True)
    accum = cfg.train.accum_steps
    sampler = StreamSampler(len(ds), seed=cfg.run.seed, rank=rank, world=world,
                            start=start * accum * bs)
    loader = make_loader(ds, sampler, pin_memory=device.type == "cuda")
    collate = WarpCollate(cfg.warp, cfg.collate, device=device, seed=cfg.run.seed, rank=rank)
    val = validation_batches(cfg, manifest, val_recs, device) if main else []
    if val and not any(bool(b.mask.any()) for b in val):
        log.warning("the %d validation samples have no hole pixels at all: psnr_hole and "
                    "ssim_hole are undefined (NaN) and best.pt follows them blindly. Raise "
                    "warp.level or data.scale_range, or hold out other sources "
                    "(data.val_fraction)", sum(len(b) for b in val))
    # the datasets hold flat arrays; drop the manifest's dicts before the workers fork
    del manifest, train_recs, val_recs
    gc.collect()
    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(run_dir / "tb"), purge_step=start if start else None)
    metrics_path = run_dir / "metrics.jsonl"
    if main and resume and metrics_path.exists():
        # rows logged after the checkpoint by a killed run will be logged again: drop them
        # (TensorBoard does the same through purge_step)
        keep = [line for line in metrics_path.read_text(encoding="utf-8").splitlines()
                if _row_step(line) <= start]
        atomic_write_bytes(metrics_path, "".join(x + "\n" for x in keep).encode())

    stop = min(cfg.train.stop_at or cfg.train.steps, cfg.train.steps)
    result = TrainResult(step=start, model=trainer.model, run_dir=run_dir)
    interrupted = {"flag": False}
    old_term = None
    if hasattr(signal, "SIGTERM"):
        old_term = signal.signal(signal.SIGTERM, lambda *_: interrupted.__setitem__("flag", True))

    def save(step: int, name: str = "last.pt"):
        if main:
            save_checkpoint(ckpt_dir / name, trainer.state(step, best))

    def log_row(row: dict):
        if main:
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def validate(step: int, model: torch.nn.Module | None = None) -> dict:
        """Score the validation set (with ``model``: the EMA weights) and log the scores to
        metrics.jsonl and TensorBoard."""
        ema = model is not None
        m = evaluate(trainer, val, model)
        log_row({"kind": "val_ema" if ema else "val", "step": step, **m})
        if writer:
            for k, v in m.items():
                writer.add_scalar(tb_tag("val", f"ema_{k}" if ema else k), v, step)
        return m

    if main and val and start == 0:
        # step 0: the untrained model (= its first guess, model.prefill),
        # the reference every validation curve starts from; it does not make a best.pt
        result.val.append({"step": 0, **validate(0)})
    from tqdm import tqdm
    bar = tqdm(total=stop, initial=start, desc=f"train {cfg.run.name}", unit="step",
               disable=not (main and progress), dynamic_ncols=True)
    prefetch = iter(Prefetcher(loader, collate, start_step=start * accum))
    step = start
    win = {"t": time.perf_counter(), "wait": 0.0, "n": 0}
    warned_holes = False
    try:
        while step < stop and not _stop_requested(interrupted["flag"], ddp, step, cfg, device):
            got = [next(prefetch) for _ in range(accum)]
            batch, wait = got[-1][0], sum(w for _, w in got)
            loss, parts = trainer.step([b for b, _ in got] if accum > 1 else batch)
            step += 1
            win["wait"] += wait
            win["n"] += 1
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == stop:
                dt = time.perf_counter() - win["t"]
                row = {"step": step, "loss": loss.item(), **{k: v.item() for k, v in parts.items()},
                       "lr": trainer.sched.get_last_lr()[0],
                       "samples_per_s": win["n"] * bs * accum * world / max(dt, 1e-9),
                       "data_wait_fraction": win["wait"] / max(dt, 1e-9),
                       **hole_stats(batch, cfg.collate.min_hole_px)}
                if row["few_holes"] > 0.5 and not warned_holes:
                    warned_holes = True
                    log.warning("step %d: %.0f%% of the batch has fewer than collate.min_hole_px=%d "
                                "hole pixels per frame: the shifts are small for these frames. "
                                "Raise warp.level or data.scale_range (shifts are %% of the frame "
                                "width), or lower collate.min_hole_px", step,
                                100 * row["few_holes"], cfg.collate.min_hole_px)
                result.history.append(row)
                log_row({"kind": "train", **row})
                if writer:
                    for k, v in row.items():
                        if k != "step":
                            writer.add_scalar(tb_tag("train", k), v, step)
                bar.set_postfix(loss=f"{row['loss']:.4f}", sps=f"{row['samples_per_s']:.1f}",
                                wait=f"{100 * row['data_wait_fraction']:.0f}%")
                win = {"t": time.perf_counter(), "wait": 0.0, "n": 0}
            if writer and step % cfg.train.image_every == 0:
                with torch.no_grad():
                    writer.add_image("train/input_pred_target_error_zoom",
                                     image_grid(batch, trainer.predict(batch, net=trainer.model),
                                                names=batch_names(ds, batch)), step)
            if step % cfg.train.val_every == 0 or step == stop:
                if main and val:
                    m = validate(step)
                    result.val.append({"step": step, **m})
                    if writer:
                        with torch.no_grad():
                            writer.add_image("val/input_pred_target_error_zoom",
                                             image_grid(val[0], trainer.predict(val[0], net=trainer.model),
                                                        names=val[0].meta.get("names")), step)
                    v = m[cfg.train.best_metric]
                    if best["value"] is None or v > best["value"]:
                        best = {**best, "metric": cfg.train.best_metric, "value": v, "step": step}
                        save(step, "best.pt")
                    if trainer.ema is not None:
                        me = validate(step, trainer.ema)
                        result.val[-1].update({f"ema_{k}": x for k, x in me.items()})
                        ve = me[cfg.train.best_metric]
                        if best.get("ema_value") is None or ve > best["ema_value"]:
                            best = {**best, "ema_value": ve, "ema_step": step}
                            if main:   # the EMA weights as "model": load_model/inpaint take it
                                st = trainer.state(step, best)
                                st["model"] = st.pop("model_ema")
                                save_checkpoint(ckpt_dir / "best_ema.pt", st)
                if ddp:
                    dist.barrier()                                                  # DDP
            if step % cfg.train.ckpt_every == 0 and step != stop:
                save(step)
    except KeyboardInterrupt:
        interrupted["flag"] = True
    finally:
        bar.close()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    save(step)
    if step < stop and main:
        log.warning("interrupted at step %d: saved %s (continue with --resume)", step, last)
    if writer:
        writer.close()
    if ddp:
        dist.barrier()                                                              # DDP
    result.step = step
    return result


def tb_tag(kind: str, key: str) -> str:
    """TensorBoard tag of a logged value: scores (PSNR, SSIM, temporal error of the held-out
    set) apart from losses, the optimiser, throughput and the data's hole statistics."""
    if kind == "val":
        return f"score/{key}"
    if key in ("samples_per_s", "data_wait_fraction"):
        return f"perf/{key}"
    if key in ("hole_fraction", "few_holes"):
        return f"data/{key}"
    if key in ("lr", "grad_norm"):
        return f"optim/{key}"
    return f"loss/{key}"


def _describe_run(cfg: Config, device, world: int, trainer: "Trainer", train_recs, val_recs,
                  run_dir) -> None:
    """What the run is about to do, in a few log lines (devices, sources, model, depth, output)."""
    amp = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(trainer.amp, str(trainer.amp))
    log.info("device %s, world size %d, AMP %s, torch.compile %s", device, world, amp,
             "on" if cfg.train.compile else "off")
    n_src = lambda recs: len({r["source"] for r in recs})  # noqa: E731
    log.info("data: %d cached frames from %d sources for training, %d from %d held-out sources "
             "(%d validation samples); crop %d (window %g), batch %d",
             len(train_recs), n_src(train_recs), len(val_recs), n_src(val_recs),
             cfg.data.val_count if val_recs else 0, cfg.data.crop, cfg.data.crop_window,
             cfg.data.batch_size)
    params = sum(p.numel() for p in trainer.model.parameters())
    log.info("model %s: %.2fM parameters", cfg.model.kind, params / 1e6)
    backends = sorted({r.get("backend", "?") for r in (*train_recs, *val_recs)})
    log.info("depth: %s (cache %s)", ", ".join(backends), cfg.data.cache_dir)
    if any(b.startswith("fallback") for b in backends):
        log.warning("the depth cache was made by the LOW-QUALITY fallback backend: fine to try "
                    "the pipeline, not to train a model for real depth")
    log.info("writing to %s: checkpoints/, metrics.jsonl, tb/ (tensorboard --logdir %s)",
             run_dir, run_dir / "tb")


def _row_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return float("inf")          # a torn line from a kill


def _stop_requested(flag: bool, ddp: bool, step: int, cfg: Config, device) -> bool:
    """SIGTERM/Ctrl-C seen? Under DDP all ranks must stop at the same step, so the flag is
    all-reduced, at log steps only (one tiny collective per log_every steps)."""
    if not ddp:
        return flag
    if step % cfg.train.log_every:
        return False
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t)                                                              # DDP
    return bool(t.item() > 0)


def _warn_config_changes(old: dict, new: dict) -> None:
    changed = [f"{s}.{k}: {old.get(s, {}).get(k)!r} -> {v!r}" for s, vals in new.items()
               for k, v in vals.items() if old.get(s, {}).get(k) != v
               and (s, k) not in {("train", "stop_at")}]
    if changed:
        log.warning("resuming with a changed config (the run will not repeat an uninterrupted "
                    "one exactly): %s", "; ".join(changed))

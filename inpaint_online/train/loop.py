"""The training loop: setup, loop, validation, checkpoints (nanoGPT's shape; docs/design.md,
"train").

Data: :class:`~inpaint_online.stream.CacheDataset` crops in DataLoader workers →
:class:`~inpaint_online.stream.Prefetcher` runs :class:`~inpaint_online.stream.WarpCollate`
on the device one batch ahead → :meth:`Trainer.step`. DDP is the few lines marked ``# DDP``:
``torchrun`` sets the environment, every rank reads its own shard of the data stream and
draws its own warp parameters, rank 0 validates, logs and writes checkpoints.

Reproducibility: model init from ``run.seed``; the n-th sample of a rank and the warp
parameters of step s come from seeds derived from (seed, rank, n) and (seed, rank, s). A
checkpoint holds the step, so ``--resume`` continues the identical stream: on CPU, N steps
in one go and N/2 + resume + N/2 give bit-identical weights (tested).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from ..cache import has_cache, open_cache
from ..config import Config, ConfigError
from ..devices import resolve_device
from ..stream import (
    CacheDataset,
    FolderDataset,
    Prefetcher,
    split_folder,
    split_records,
    training_stream,
)
from .rundir import (
    RunDir,
    batch_names,
    describe_run,
    drop_empty_run_folder,
    hold_run_folder,
    hole_stats,
    image_grid,
)
from .trainer import Trainer, restore
from .validation import (
    Validation,
    folder_validation_batches,
    layered_validation_batches,
    validation_batches,
)

__all__ = ["train", "TrainResult", "validation_source"]

log = logging.getLogger("inpaint_online.train")


@dataclass
class TrainResult:
    step: int
    model: torch.nn.Module
    history: list[dict] = field(default_factory=list)      # logged train rows
    val: list[dict] = field(default_factory=list)          # validation rows
    run_dir: Path | None = None
    best: dict = field(default_factory=dict)              # Validation.best at the end
    stopped: str | None = None             # before the last step: "sigterm", "interrupt" or
                                           # "time" (train.max_minutes)


def train(cfg: Config, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``cfg`` (from step 0, or from the run's ``last.pt`` with ``resume``) until
    ``train.steps`` (or ``train.stop_at``), SIGTERM or Ctrl-C; the state is saved on the way
    out."""
    rank, world, local, owned = _setup_distributed()
    lock, created, ok = None, False, False
    try:
        if rank == 0:                          # the only writer of the run folder
            lock, created = hold_run_folder(cfg)
        out = _run(cfg, resume, progress, rank, world, local)
        ok = True
        return out
    finally:
        if lock is not None:
            lock.release()
            if created and not ok:
                drop_empty_run_folder(cfg)
        if owned:
            # a process group left to the interpreter's exit tears down its threads in
            # arbitrary order: seen as "terminate called without an active exception"
            # (SIGABRT) after a finished run on a loaded machine
            dist.destroy_process_group()                                            # DDP


def _run(cfg: Config, resume: bool, progress: bool, rank: int, world: int,
         local: int) -> TrainResult:
    main, ddp = rank == 0, world > 1
    if ddp and cfg.run.device == "auto" and os.environ.get("INPAINT_DDP_BACKEND") == "gloo":
        cfg.run.device = "cpu"
    device = resolve_device(cfg.run.device, local)
    run = RunDir(cfg, main)
    run.check(resume)
    manifest, ds, val_ds, train_recs, val_recs = _datasets(cfg)
    trainer = Trainer(cfg, device, ddp_rank=rank if ddp else None)
    start, best = restore(trainer, cfg, run.last, resume, main)
    if start >= cfg.train.steps:
        if main:
            log.info("%s finished at step %d of train.steps=%d: nothing to do (raise "
                     "train.steps to train on)", run.path, start, cfg.train.steps)
        return TrainResult(step=start, model=trainer.model, run_dir=None)
    if main:
        describe_run(cfg, device, world, trainer, train_recs, val_recs, run.path,
                     folder=ds if isinstance(ds, FolderDataset) else None, val_folder=val_ds)
    run.prepare()
    accum, bs = cfg.train.accum_steps, cfg.data.batch_size
    loader, collate = training_stream(ds, cfg, device, seed=cfg.run.seed, rank=rank, world=world,
                                      start_batch=start * accum)
    val = Validation(cfg, trainer, (folder_validation_batches(cfg, val_ds, device) if val_ds
                                    else validation_batches(cfg, manifest, val_recs, device))
                     if main else [], run, best,
                     layered=layered_validation_batches(cfg, manifest, val_recs, device)
                     if main and cfg.data.val_layered else None)
    if val and not any(bool(b.mask.any()) for b in val.batches):
        log.warning("the %d validation samples have no hole pixels at all: psnr_hole and "
                    "ssim_hole are undefined (NaN) and best.pt follows them blindly. Raise "
                    "warp.level or data.scale_range, or hold out other sources "
                    "(data.val_fraction)", sum(len(b) for b in val.batches))
    # the datasets hold flat arrays; drop the manifest's dicts before the workers fork
    del manifest, train_recs, val_recs
    gc.collect()
    run.open_logs(start, resume)

    stop = min(cfg.train.stop_at or cfg.train.steps, cfg.train.steps)
    result = TrainResult(step=start, model=trainer.model, run_dir=run.path)
    if main and val and start == 0:
        result.val.append(val.first_guess())
    bar = tqdm(total=stop, initial=start, desc=f"train {cfg.run.name}", unit="step",
               disable=not (main and progress), dynamic_ncols=True)
    batches = iter(Prefetcher(loader, collate, start_step=start * accum))
    step, meter, sigterm, warned = start, _Meter(), _StopFlag(), False
    deadline = time.monotonic() + 60 * cfg.train.max_minutes if cfg.train.max_minutes else None
    timed_out = validated = False
    try:
        while step < stop and not sigterm.agreed(ddp, step, cfg, device):
            if deadline is not None and time.monotonic() > deadline:
                # stops at the next check (under DDP the next log step, on every rank)
                timed_out = sigterm.flag = True
            got = [next(batches) for _ in range(accum)]
            batch = got[-1][0]
            loss, parts = trainer.step([b for b, _ in got] if accum > 1 else batch)
            step += 1
            meter.add(sum(w for _, w in got))
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == stop:
                row = {"step": step, "loss": loss.item(),
                       **{k: v.item() for k, v in parts.items()},
                       "lr": trainer.sched.get_last_lr()[0], **meter.read(bs * accum * world),
                       **hole_stats(batch, cfg.collate.min_hole_px)}
                warned = warned or _warn_few_holes(row, step, cfg)
                result.history.append(row)
                run.log_row({"kind": "train", **row})
                run.scalars("train", row, step)
                bar.set_postfix(loss=f"{row['loss']:.4f}", sps=f"{row['samples_per_s']:.1f}",
                                wait=f"{100 * row['data_wait_fraction']:.0f}%")
            if step % cfg.train.image_every == 0:
                run.image("train/input_pred_target_error_zoom",
                          lambda: image_grid(batch, trainer.predict(batch, net=trainer.model),
                                             names=batch_names(ds, batch)), step)
            validated = step % cfg.train.val_every == 0 or step == stop
            if validated:
                if main and val:
                    result.val.append(val(step))
                if ddp:
                    dist.barrier()                                                  # DDP
            if step % cfg.train.ckpt_every == 0 and step != stop:
                run.save("last.pt", trainer.state(step, val.best))
    except KeyboardInterrupt:
        sigterm.flag, sigterm.reason = True, "interrupt"
    finally:
        bar.close()
        sigterm.restore()
    if timed_out and step > start and not validated:
        if main and val:                 # a time-limited run ends with a scored best.pt
            result.val.append(val(step))
        if ddp:
            dist.barrier()                                                          # DDP
    run.save("last.pt", trainer.state(step, val.best))
    if timed_out and main:
        log.warning("stopped after train.max_minutes=%g at step %d of %d: saved %s (continue "
                    "with --resume, with a new time budget)", cfg.train.max_minutes, step, stop,
                    run.last)
    elif step < stop and main:
        log.warning("interrupted at step %d: saved %s (continue with --resume)", step, run.last)
    run.close()
    if ddp:
        dist.barrier()                                                              # DDP
    result.step, result.best = step, dict(val.best)
    if step < stop:
        result.stopped = "time" if timed_out else sigterm.reason
    return result


def _datasets(cfg: Config):
    """``(manifest, train dataset, held-out fixed dataset, training records, held-out
    records)``: the cache's (``data.source: stream``), or a fixed dataset's training split
    with the cache's held-out records (``data.val_from`` cache) or its own eval split
    (folder; then the manifest and the records are None and empty)."""
    folder = cfg.data.source == "folder"
    val_from = validation_source(cfg)
    if cfg.data.val_layered and val_from == "folder":
        raise ConfigError(f"data.val_layered makes layered samples from the depth cache, and "
                          f"this run validates on {cfg.data.folder}/eval (no depth): set "
                          "data.val_from cache with a data.cache_dir, or data.val_layered false")
    manifest = (open_cache(cfg.data.cache_dir, cfg.data.rgb_from)
                if not folder or val_from == "cache" else None)
    train_recs, val_recs = (split_records(manifest.samples(), cfg.data.val_fraction,
                                          cfg.data.val_sources)
                            if manifest is not None else ([], []))
    if not folder:
        ds = CacheDataset(manifest, train_recs, cfg.data, train=True)
        return manifest, ds, None, train_recs, val_recs
    ds = FolderDataset(split_folder(cfg.data.folder, "train"), cfg.data, train=True)
    val_ds = (FolderDataset(split_folder(cfg.data.folder, "eval"), cfg.data, train=False)
              if val_from == "folder" else None)
    return manifest, ds, val_ds, train_recs, val_recs


def validation_source(cfg: Config) -> str:
    """Where a run validates: ``cache`` (the held-out sources' warped samples) or ``folder``
    (a fixed dataset's ``eval`` split). A folder run with ``data.val_from: auto`` validates on
    the cache when ``data.cache_dir`` is one — the very samples a streaming run of the config
    validates on, so the two compare."""
    if cfg.data.source == "stream":
        return "cache"
    if cfg.data.val_from != "auto":
        return cfg.data.val_from
    return "cache" if has_cache(cfg.data.cache_dir) else "folder"


class _Meter:
    """Samples/s and the share of wall time spent waiting for data, over a logging window."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.t, self.wait, self.n = time.perf_counter(), 0.0, 0

    def add(self, wait: float) -> None:
        self.wait += wait
        self.n += 1

    def read(self, samples_per_step: int) -> dict:
        dt = max(time.perf_counter() - self.t, 1e-9)
        out = {"samples_per_s": self.n * samples_per_step / dt,
               "data_wait_fraction": self.wait / dt}
        self.reset()
        return out


class _StopFlag:
    """SIGTERM (and Ctrl-C) request a stop at the next step; the state is saved on the way out."""

    def __init__(self):
        self.flag, self.reason = False, "sigterm"
        self.old = None
        if hasattr(signal, "SIGTERM"):
            self.old = signal.signal(signal.SIGTERM, self._set)

    def _set(self, *_):
        self.flag = True

    def restore(self) -> None:
        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)

    def agreed(self, ddp: bool, step: int, cfg: Config, device) -> bool:
        """Stop now? Under DDP all ranks must stop at the same step, so the flag is
        all-reduced, at log steps only (one tiny collective per ``log_every`` steps)."""
        if not ddp:
            return self.flag
        if step % cfg.train.log_every:
            return False
        t = torch.tensor([float(self.flag)], device=device)
        dist.all_reduce(t)                                                          # DDP
        return bool(t.item() > 0)


def _warn_few_holes(row: dict, step: int, cfg: Config) -> bool:
    """Warn (once per run: the caller keeps the answer) when most of a batch has few holes."""
    if row["few_holes"] <= 0.5:
        return False
    if cfg.data.source == "folder":          # the holes are the fixed dataset's own
        advice = (f"the fixed dataset's holes are small in these {cfg.data.crop}-px crops. Export "
                  "with larger shifts (warp.level) or train with a larger data.crop; "
                  "collate.min_hole_px only sets this warning's threshold here")
    else:
        advice = ("the shifts are small for these frames. Raise warp.level or data.scale_range "
                  "(shifts are % of the frame width), or lower collate.min_hole_px")
    log.warning("step %d: %.0f%% of the batch has fewer than collate.min_hole_px=%d hole "
                "pixels per frame: %s", step, 100 * row["few_holes"], cfg.collate.min_hole_px, advice)
    return True


def _setup_distributed():
    """``(rank, world, local_rank, owned)``; initialises the process group under torchrun
    (``owned``: this call did, so :func:`train` destroys it when it returns)."""  # DDP
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0, False
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return rank, world, local, False
    gloo = os.environ.get("INPAINT_DDP_BACKEND") == "gloo"
    backend = "nccl" if torch.cuda.is_available() and not gloo else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend)
    return rank, world, local, True

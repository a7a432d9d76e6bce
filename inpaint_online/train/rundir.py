"""What a run writes to its folder (``<run.out_dir>/<run.name>/``): ``config.yaml``,
``metrics.jsonl``, TensorBoard logs in ``tb/`` and ``checkpoints/`` — and what it says about
itself on start (docs/design.md, "train"). Only rank 0 writes; on other ranks a
:class:`RunDir` does nothing."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml

from ..checkpoint import save_checkpoint
from ..config import Config, ConfigError
from ..fsutil import LockHeld, ProcessLock, atomic_write_bytes, sweep_temp
from ..models import composite
from ..pictures import error_tile, hole_overlay, sample_label, sheet, to_uint8, zoom_on_holes
from ..stream import Batch, CacheDataset, FolderDataset

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["hold_run_folder", "drop_empty_run_folder", "RunDir", "tb_tag", "image_grid",
           "batch_names", "hole_stats", "describe_run"]

log = logging.getLogger("inpaint_online.train")


def hold_run_folder(cfg: Config) -> tuple[ProcessLock, bool]:
    """One live writer per run folder: the same command started twice once wrote every
    metrics row twice. Returns the lock (release it when the run ends) and whether the folder
    was made here (an empty folder is removed again by the caller when the run fails)."""
    path = cfg.run_dir
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        return ProcessLock(path / ".run.lock", "train_online.py"), created
    except LockHeld as e:
        raise ConfigError(f"{path}: {e.holder} is writing this run; wait for it to end (or "
                          "stop it), or give this one another run.name") from None


def drop_empty_run_folder(cfg: Config) -> None:
    """Remove a run folder that holds nothing but its lock file (a run that failed at once)."""
    path = cfg.run_dir
    try:
        if {p.name for p in path.iterdir()} <= {".run.lock"}:
            (path / ".run.lock").unlink(missing_ok=True)
            path.rmdir()
    except OSError:
        pass


class RunDir:
    """The run folder of ``cfg`` as seen by one rank (``main``: rank 0, the only writer)."""

    def __init__(self, cfg: Config, main: bool):
        self.cfg, self.main = cfg, main
        self.path: Path = cfg.run_dir
        self.ckpt_dir = self.path / "checkpoints"
        self.last = self.ckpt_dir / "last.pt"
        self.metrics = self.path / "metrics.jsonl"
        self.writer = None

    def check(self, resume: bool) -> None:
        """A new run must not overwrite a run's checkpoints; a resume needs them."""
        if self.last.exists() and not resume:
            raise ConfigError(f"{self.path}: this run already has a checkpoint ({self.last}). "
                              "Pass --resume to continue it, or choose another run.name")
        if resume and not self.last.exists():
            raise ConfigError(f"--resume: no checkpoint at {self.last}")

    def prepare(self) -> None:
        """Create the folders, sweep the temp files of an interrupted write, save the config."""
        if not self.main:
            return
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        sweep_temp(self.path)
        sweep_temp(self.ckpt_dir)              # a checkpoint write a kill interrupted
        saved = self.cfg.to_dict()
        saved["train"]["stop_at"] = 0          # belongs to one invocation, not to the run
        atomic_write_bytes(self.path / "config.yaml",
                           yaml.safe_dump(saved, sort_keys=False).encode())

    def open_logs(self, start: int, resume: bool) -> None:
        """TensorBoard and metrics.jsonl from step ``start``: rows a killed run logged after its
        last checkpoint will be logged again, so they are dropped (TensorBoard does the same
        through ``purge_step``)."""
        if not self.main:
            return
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(self.path / "tb"), purge_step=start if start else None)
        if resume and self.metrics.exists():
            keep = [line for line in self.metrics.read_text(encoding="utf-8").splitlines()
                    if _row_step(line) <= start]
            atomic_write_bytes(self.metrics, "".join(x + "\n" for x in keep).encode())

    def log_row(self, row: dict) -> None:
        if self.main:
            with open(self.metrics, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def scalars(self, kind: str, values: dict, step: int) -> None:
        if self.writer:
            for k, v in values.items():
                if k != "step":
                    self.writer.add_scalar(tb_tag(kind, k), v, step)

    def image(self, tag: str, make: Callable[[], torch.Tensor], step: int) -> None:
        """A picture for TensorBoard, made (``make()``, without gradients) only when written."""
        if self.writer:
            with torch.no_grad():
                self.writer.add_image(tag, make(), step)

    def save(self, name: str, state: dict) -> None:
        if self.main:
            save_checkpoint(self.ckpt_dir / name, state)

    def close(self) -> None:
        if self.writer:
            self.writer.close()


def tb_tag(kind: str, key: str) -> str:
    """TensorBoard tag of a logged value: scores (PSNR, SSIM, temporal error of the held-out
    set) apart from losses, the optimiser, throughput and the data's hole statistics."""
    if kind == "val":
        return f"score/{key}"
    if kind == "val_layered":          # data.val_layered's second set
        return f"score_layered/{key}"
    if key in ("samples_per_s", "data_wait_fraction"):
        return f"perf/{key}"
    if key in ("hole_fraction", "few_holes"):
        return f"data/{key}"
    if key in ("lr", "grad_norm"):
        return f"optim/{key}"
    if key == "ssim":      # the SSIM itself (rises while its loss term 1 - SSIM falls)
        return "train_score/ssim_around_holes"
    return f"loss/{key}"


GRID_COLUMNS = ["input (holes magenta)", "prediction", "target", "|pred - target| x4",
                "zoom: input", "zoom: prediction", "zoom: target"]


def image_grid(batch: Batch, pred: torch.Tensor, n: int = 4,
               names: list[str] | None = None) -> torch.Tensor:
    """A labelled sheet ``(3, H', W')`` in [0, 1] of the ``n`` samples with the most hole
    pixels (for clips: the frames of the clip with the most): input with the holes in
    magenta | prediction (composited) | target | amplified error | the same zoomed on the
    densest holes. Row labels: source (``names``), view (left views were mirrored, as the
    model sees them), divergence, convergence, hole share."""
    recs = batch.params.records() if batch.params is not None else [None] * len(batch)
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


def batch_names(ds: CacheDataset | FolderDataset, batch: Batch) -> list[str]:
    """The source (and frame) of each sample of a batch from ``ds`` (a fixed dataset's:
    the sample's name)."""
    return [ds.label(i) for i in batch.meta["index"].tolist()]


def hole_stats(batch: Batch, min_px: int) -> dict:
    """Mean hole fraction of a batch, and the share of samples (frames) with fewer than
    ``min_px`` hole pixels — the first thing to look at when a config makes too few holes."""
    m = batch.mask.flatten(0, 1) if batch.mask.dim() == 5 else batch.mask
    px = m.flatten(1).sum(1)
    return {"hole_fraction": m.mean().item(), "few_holes": (px < min_px).float().mean().item()}


def describe_run(cfg: Config, device, world: int, trainer: "Trainer", train_recs, val_recs,
                 run_dir, folder: FolderDataset | None = None,
                 val_folder: FolderDataset | None = None) -> None:
    """What the run is about to do, in a few log lines (devices, sources, model, depth,
    output). ``folder``: a fixed dataset's training split (``data.source: folder``),
    ``val_folder`` its eval split when the run validates on it."""
    amp = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(trainer.amp,
                                                                          str(trainer.amp))
    log.info("device %s, world size %d, AMP %s, torch.compile %s", device, world, amp,
             "on" if cfg.train.compile else "off")
    n_src = lambda recs: len({r["source"] for r in recs})  # noqa: E731
    if folder is not None:
        kind = "clips" if cfg.data.clip_len > 1 else "samples"
        log.info("data: a fixed dataset, %d %s in %s (data.source folder: the same holes every "
                 "epoch; iw3's crop, mask widening collate.widen_*); crop %d, batch %d", len(folder), kind,
                 folder.root, cfg.data.crop, cfg.data.batch_size)
        if val_folder is not None:
            log.info("validation: %d of the %d %s in %s", min(cfg.data.val_count, len(val_folder)),
                     len(val_folder), kind, val_folder.root)
        else:
            log.info("validation: %d samples warped from %d held-out sources of %s (the samples "
                     "a streaming run of this config validates on)",
                     cfg.data.val_count if val_recs else 0, n_src(val_recs), cfg.data.cache_dir)
    else:
        log.info("data: %d cached frames from %d sources for training, %d from %d held-out "
                 "sources (%d validation samples); crop %d (window %g), batch %d",
                 len(train_recs), n_src(train_recs), len(val_recs), n_src(val_recs),
                 cfg.data.val_count if val_recs else 0, cfg.data.crop, cfg.data.crop_window,
                 cfg.data.batch_size)
    if folder is None and train_recs:
        n = len({r["source"] for r in train_recs})
        log.info("sampling: %s (data.balance %s)", f"every one of the {n} sources equally often"
                 if cfg.data.balance == "source" else "every cached frame alike",
                 cfg.data.balance)
    if val_recs:
        held = sorted({r["rel"] for r in val_recs})
        log.info("held out for validation: %s%s", ", ".join(held[:8]),
                 f" and {len(held) - 8} more" if len(held) > 8 else "")
        if cfg.data.val_layered:
            log.info("validation also on %d layered samples of these sources (data.val_layered: "
                     "a cut-out pasted in front, the true background behind the holes); best.pt "
                     "is the step with the largest weaker margin over the two sets' best "
                     "classical fills", cfg.data.val_count)
    params = sum(p.numel() for p in trainer.model.parameters())
    log.info("model %s: %.2fM parameters", cfg.model.kind, params / 1e6)
    backends = sorted({r.get("backend", "?") for r in (*train_recs, *val_recs)})
    if backends:
        log.info("depth: %s (cache %s)", ", ".join(backends), cfg.data.cache_dir)
    if any(b.startswith("fallback") for b in backends):
        log.warning("the depth cache was made by the LOW-QUALITY fallback backend: fine to try "
                    "the pipeline, not to train a model for real depth")
    # the out_dir, not the run's tb/: TensorBoard then names every run (one run's tb/ is ".")
    log.info("writing to %s: checkpoints/, metrics.jsonl, tb/ (tensorboard --logdir %s)",
             run_dir, run_dir.parent)


def _row_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return float("inf")          # a torn line from a kill

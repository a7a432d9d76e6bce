"""The model's side of training: :class:`Trainer` (model, optimiser, schedule, AMP, EMA, the
loss; one optimiser step per call) and :func:`restore` (``train.init_from`` weights or a
``--resume`` checkpoint) (docs/design.md, "train")."""

from __future__ import annotations

import copy
import logging
import math
from contextlib import nullcontext

import torch

from ..checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from ..config import Config
from ..devices import amp_dtype
from ..errors import one_line, show
from ..iw3net import NUNIF_MODELS, inner, is_nunif_model_file, nunif_kind
from ..losses import InpaintLoss
from ..models import build_model, model_config_dict, model_offset
from ..stream import Batch

__all__ = ["Trainer", "lr_lambda", "restore"]

log = logging.getLogger("inpaint_online.train")


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
        self.offset = model_offset(self.model)
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

    def predict(self, batch: Batch, net=None, blend: bool = False):
        """The prediction; with ``blend`` also the dual model's blended fills."""
        kw = {"blend": True} if blend else {}        # iw3's networks take no blend argument
        with self.autocast():
            return (net or self.net)(batch.x, batch.mask, batch.depth, **kw)

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
                want = self.cfg.loss.blend_l1 > 0     # dual models only (checked with the config)
                out = self.predict(b, blend=want)
                pred, blend = out if want else (out, None)
                if self.offset:          # iw3's networks: scored inside their 16-px border
                    pred, b = inner(pred, self.offset), b.inner(self.offset)
                loss, p = self.loss(pred, b, blend)
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


def restore(trainer: Trainer, cfg: Config, last, resume: bool, main: bool) -> tuple[int, dict]:
    """Start weights and state: ``(start_step, best)``. With ``resume`` the whole state of
    ``last`` (weights, optimiser, schedule, scaler, RNG, EMA, best scores); else, with
    ``train.init_from``, only that checkpoint's weights (fine-tuning: a fresh optimiser,
    schedule and step count); else the freshly initialised model at step 0."""
    best = {"metric": cfg.train.best_metric, "value": None, "step": None}
    expect = model_config_dict(cfg.model)
    if resume:
        ck = load_checkpoint(last, expect_model=expect, map_location=trainer.device)
        _warn_config_changes(ck["config"], cfg.to_dict())
        trainer.load_state(ck)
        return ck["step"], ck["best"]
    if cfg.train.init_from:
        src = cfg.train.init_from
        init = read_checkpoint(src, map_location=trainer.device)
        if is_nunif_model_file(init):           # iw3's own weights (or ours saved for iw3)
            want = next((n for n in NUNIF_MODELS if nunif_kind(n) == cfg.model.kind), None)
            if nunif_kind(init.get("name")) != cfg.model.kind:
                raise CheckpointError(f"{show(src)}: nunif model {init.get('name')!r} does not fit "
                                      f"model.kind {cfg.model.kind!r}"
                                      + (f" (that takes {want})" if want else
                                         " (only the iw3_* kinds take nunif model files)"))
            state = init["state_dict"]
        else:
            state = load_checkpoint(src, expect_model=expect, data=init)["model"]
        try:
            trainer.model.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"{show(src)}: the weights do not fit the model "
                                  f"({one_line(e)[:300]})") from None
        if trainer.ema is not None:
            trainer.reset_ema()
        if main:
            log.info("weights from %s (step %s of its run); optimiser and schedule start fresh",
                     cfg.train.init_from, init.get("step"))
    return 0, best


def _warn_config_changes(old: dict, new: dict) -> None:
    changed = [f"{s}.{k}: {old.get(s, {}).get(k)!r} -> {v!r}" for s, vals in new.items()
               for k, v in vals.items() if old.get(s, {}).get(k) != v
               and (s, k) not in {("train", "stop_at"), ("train", "max_minutes")}]
    if changed:
        log.warning("resuming with a changed config (the run will not repeat an uninterrupted "
                    "one exactly): %s", "; ".join(changed))

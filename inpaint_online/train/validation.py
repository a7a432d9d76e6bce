"""The held-out measure of a run: a fixed validation set, its scores, and the best checkpoints
(``best.pt`` on the model's score, ``best_ema.pt`` on the EMA's) (docs/design.md, "train")."""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F

from ..baselines import classical_fills, fill_all
from ..config import Config
from ..iw3net import inner
from ..losses import batch_scores, mean_scores
from ..models import composite, model_offset
from ..stream import Batch, CacheDataset, FolderCollate, FolderDataset, WarpCollate
from .rundir import RunDir, batch_names, image_grid
from .trainer import Trainer

__all__ = ["validation_batches", "layered_validation_batches", "folder_validation_batches",
           "hole_texture", "pick_in_turns", "evaluate", "classical_scores", "Validation",
           "margins", "verdict"]

log = logging.getLogger("inpaint_online.train")


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


def layered_validation_batches(cfg: Config, manifest, records: list[dict], device) -> list[Batch]:
    """``data.val_layered``'s second set: :func:`validation_batches` of the same held-out
    sources with every sample layered (``data.val_composite_p`` 1: a cut-out of another
    held-out source pasted in front, holes with the true background behind them)."""
    layered = copy.deepcopy(cfg)
    layered.data.val_composite_p = 1.0
    return validation_batches(layered, manifest, records, device)


def folder_validation_batches(cfg: Config, ds: FolderDataset, device) -> list[Batch]:
    """A fixed dataset's validation set: its first ``data.val_count`` held-out samples (by
    name), each at iw3's fixed crop (the grid crop with the most holes), no jitter, no mask
    widening — the same batches every run."""
    count = min(cfg.data.val_count, len(ds))
    collate = FolderCollate(cfg.collate, device=device, augment=False)
    out = []
    for start in range(0, count, cfg.data.batch_size):
        items = [ds[(i, i)] for i in range(start, min(count, start + cfg.data.batch_size))]
        b = collate({k: torch.stack([it[k] for it in items]) for k in items[0]}, step=start)
        b.meta["names"] = batch_names(ds, b)
        out.append(b)
    return out


def hole_texture(batch: Batch) -> torch.Tensor:
    """``(B,)``: how much texture the holes of each sample cover — the sum over hole pixels
    of the target's local gradient magnitude (gray, |dx| + |dy|, 3x3 mean); frames of a clip
    add up. Large when wide holes lie on detail, small for few holes or holes on flat areas."""
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
    off = model_offset(model)
    for b in batches:
        pred = trainer.predict(b, net=model).float().clamp(0, 1)
        if off:                  # iw3's networks are scored inside their 16-px border
            pred, b = inner(pred, off), b.inner(off)
        out = composite(b.x, b.mask, pred)
        rows.append(batch_scores(out, b.y, b.mask))
    model.train(was)
    return mean_scores(rows)


@torch.no_grad()
def classical_scores(batches: list[Batch], offset: int = 0) -> dict[str, dict]:
    """The classical fills' scores (:func:`~inpaint_online.baselines.classical_fills`) on the
    validation batches, scored like a model with output ``offset``."""
    fills = classical_fills()
    rows: dict[str, list] = {name: [] for name in fills}
    for b in batches:
        for name, out in fill_all(fills, b.x, b.mask, b.depth).items():
            rows[name].append(batch_scores(inner(out, offset), inner(b.y, offset),
                                           inner(b.mask, offset)))
    return {name: mean_scores(r) for name, r in rows.items()}


def margins(best: dict) -> dict[str, float] | None:
    """The best checkpoint's margin over the better of its first guess and the best classical
    fill, per validation set (``plain``; ``layered`` with ``data.val_layered``), or None for a
    record made before the references were kept."""
    sets = {"plain": best, **({"layered": best["layered"]} if best.get("layered") else {})}
    out = {}
    for name, r in sets.items():
        v = r.get("value")
        if v is None or r.get("first_guess") is None or r.get("classical") is None:
            return None
        out[name] = v - max(r["first_guess"], r["classical"])
    return out


def verdict(best: dict) -> tuple[str, bool]:
    """One line on the best checkpoint against the untrained model (its first guess) and the
    best classical fill (on each validation set), and whether it needs a warning (not better
    than both on every set)."""
    metric, v, step = best.get("metric"), best.get("value"), best.get("step")
    if v is None:
        return "", False
    unit = " dB" if metric.startswith("psnr") else ""
    line = f"best.pt: step {step}, {metric} {v:.3f}{unit}"
    m = margins(best)
    if m is None:                         # a run resumed from a checkpoint made before
        return line, False
    line += (f" (untrained first guess {best['first_guess']:.3f}{unit}, best classical fill "
             f"'{best.get('classical_name')}' {best['classical']:.3f}{unit}: margin "
             f"{m['plain']:+.3f}{unit})")
    if "layered" in m:
        r = best["layered"]
        line += (f"; layered samples {r['value']:.3f}{unit} (first guess {r['first_guess']:.3f}"
                 f"{unit}, '{r['classical_name']}' {r['classical']:.3f}{unit}: margin "
                 f"{m['layered']:+.3f}{unit})")
    return line, min(m.values()) <= 0 or step == 0


class Validation:
    """Scores the validation set at a step, logs the scores, and keeps the best checkpoints.

    ``best`` is the record saved in every checkpoint: ``{"metric", "value", "step"}`` of the
    model and ``ema_value`` / ``ema_step`` of the EMA weights, the references (``first_guess``,
    ``classical*``) and ``latest`` (this step's score). With ``layered`` batches
    (``data.val_layered``) the same is kept for them under ``best["layered"]``, and the best
    step is the one whose *weaker* margin over the two sets' best classical fills is largest
    (``best["margin"]``, ``best["ema_margin"]``). Ranks other than 0 get no batches and do
    nothing."""

    def __init__(self, cfg: Config, trainer: Trainer, batches: list[Batch], run: RunDir,
                 best: dict, layered: list[Batch] | None = None):
        self.cfg, self.trainer, self.batches = cfg, trainer, batches
        self.layered = layered or []
        self.run, self.best = run, best

    def __bool__(self) -> bool:
        return bool(self.batches)

    def _scores(self, step: int, model: torch.nn.Module | None = None,
                layered: bool = False) -> dict:
        """Score with the trainer's model (or ``model``: the EMA weights) on the validation set
        (``layered``: the layered one) and log the scores to metrics.jsonl and TensorBoard."""
        ema = model is not None
        m = evaluate(self.trainer, self.layered if layered else self.batches, model)
        kind = "val_layered" if layered else "val"
        self.run.log_row({"kind": f"{kind}_ema" if ema else kind, "step": step, **m})
        self.run.scalars(kind, {f"ema_{k}" if ema else k: v for k, v in m.items()}, step)
        return m

    def first_guess(self) -> dict:
        """Step 0: the untrained model (= its first guess, ``model.prefill``), the reference
        every validation curve starts from, and a best-checkpoint candidate like any step (a
        run never hands back a model worse than no training unawares); the best classical
        fill on the same samples is the other reference (kept in ``best``)."""
        self.best = {**self.best, **self._references(self.batches)}
        if self.layered:
            self.best["layered"] = {**(self.best.get("layered") or {}),
                                    **self._references(self.layered)}
        return self(0)

    def _references(self, batches: list[Batch]) -> dict:
        """The best classical fill on ``batches``: its score, its name, and every fill's."""
        metric = self.cfg.train.best_metric
        cl = classical_scores(batches, model_offset(self.trainer.model))
        name = max(cl, key=lambda k: cl[k][metric])
        return {"classical": cl[name][metric], "classical_name": name,
                "classical_scores": {k: v[metric] for k, v in cl.items()}}

    def _margin(self, v: float, vl: float | None) -> float | None:
        """The weaker of the two sets' margins over their best classical fill (None without
        the layered set, or for a run resumed from a checkpoint that kept no reference: the
        plain score alone then picks best.pt)."""
        if vl is None or self.best.get("classical") is None:
            return None
        return min(v - self.best["classical"], vl - self.best["layered"]["classical"])

    def _better(self, v: float, margin: float | None, ema: bool) -> bool:
        key = "ema_" if ema else ""
        if margin is not None:
            old = self.best.get(f"{key}margin")
            return old is None or margin > old
        old = self.best.get("ema_value" if ema else "value")
        return old is None or v > old

    def __call__(self, step: int) -> dict:
        """Score the model (and the EMA) at ``step``; a new best writes ``best.pt``
        (``best_ema.pt``). Returns the row of scores (``layered_*``, ``ema_*`` beside the
        plain ones)."""
        t, metric = self.trainer, self.cfg.train.best_metric
        m = self._scores(step)
        ml = self._scores(step, layered=True) if self.layered else None
        row = {"step": step, **m, **_prefixed("layered_", ml)}
        b0 = self.batches[0]
        self.run.image("val/input_pred_target_error_zoom",
                       lambda: image_grid(b0, t.predict(b0, net=t.model),
                                          names=b0.meta.get("names")), step)
        v = m[metric]
        vl = ml[metric] if ml is not None else None
        self._note_references(step, v, vl)
        margin = self._margin(v, vl)
        self._log(step, v, vl, margin)
        # this step's score travels with every checkpoint of the step (stereo --fill auto
        # compares it with the background fill's)
        self.best = {**self.best, "latest": {"step": step, "value": v}}
        if self._better(v, margin, ema=False):
            self.best = {**self.best, "metric": metric, "value": v, "step": step}
            if margin is not None:
                self.best["margin"] = margin
                self.best["layered"] = {**self.best["layered"], "value": vl, "step": step}
            self.run.save("best.pt", t.state(step, self.best))
        if t.ema is not None:
            row.update(self._ema(step))
        return row

    def _note_references(self, step: int, v: float, vl: float | None) -> None:
        """Keep the references beside the scores: step 0's score is the first guess; the
        layered set's references (made now for a run resumed with ``data.val_layered``
        added) and its latest score go under ``best["layered"]``; both curves get their
        first guess and best classical fill drawn beside them."""
        metric = self.cfg.train.best_metric
        lay = dict(self.best.get("layered") or {})
        if vl is not None and "classical" not in lay:
            lay.update(self._references(self.layered))
        if step == 0:
            self.best = {**self.best, "first_guess": v}
            if vl is not None:
                lay["first_guess"] = vl
        if vl is not None:
            lay["latest"] = {"step": step, "value": vl}
            self.best["layered"] = lay
        fg, cl = self.best.get("first_guess"), self.best.get("classical")
        if fg is not None and cl is not None:
            self.run.scalars("val", {f"first_guess_{metric}": fg,
                                     f"best_classical_{metric}": cl}, step)
        if vl is not None and lay.get("first_guess") is not None:
            self.run.scalars("val_layered", {f"first_guess_{metric}": lay["first_guess"],
                                             f"best_classical_{metric}": lay["classical"]}, step)

    def _log(self, step: int, v: float, vl: float | None, margin: float | None) -> None:
        """The validation line: the score beside its references (and the layered set's)."""
        metric = self.cfg.train.best_metric
        fg, cl = self.best.get("first_guess"), self.best.get("classical")
        lay = self.best.get("layered") or {}
        unit = " dB" if metric.startswith("psnr") else ""
        log.info("step %d validation: %s %.3f%s%s%s", step, metric, v, unit,
                 "" if fg is None or cl is None else
                 f" (first guess {fg:.3f}, best classical fill '{self.best['classical_name']}' "
                 f"{cl:.3f})",
                 "" if vl is None else
                 f"; layered samples {vl:.3f}{unit} (first guess "
                 f"{lay.get('first_guess', float('nan')):.3f}, '{lay['classical_name']}' "
                 f"{lay['classical']:.3f}); weaker margin "
                 f"{margin:+.3f}{unit}")

    def _ema(self, step: int) -> dict:
        """Score the EMA weights at ``step``; a new best writes them as ``best_ema.pt``.
        Returns their row entries (``ema_*``, ``ema_layered_*``)."""
        t, metric = self.trainer, self.cfg.train.best_metric
        me = self._scores(step, t.ema)
        mel = self._scores(step, t.ema, layered=True) if self.layered else None
        ve = me[metric]
        ema_margin = self._margin(ve, mel[metric] if mel is not None else None)
        if self._better(ve, ema_margin, ema=True):
            self.best = {**self.best, "ema_value": ve, "ema_step": step}
            if ema_margin is not None:
                self.best["ema_margin"] = ema_margin
                self.best["layered"] = {**self.best["layered"], "ema_value": mel[metric]}
            # the EMA weights as "model": load_model / inpaint take it as they are
            st = t.state(step, self.best)
            st["model"], st["weights"] = st.pop("model_ema"), "ema"
            self.run.save("best_ema.pt", st)
        return {**_prefixed("ema_", me), **_prefixed("ema_layered_", mel)}


def _prefixed(prefix: str, scores: dict | None) -> dict:
    """``scores`` with ``prefix`` on every key (nothing for None)."""
    return {f"{prefix}{k}": x for k, x in (scores or {}).items()}

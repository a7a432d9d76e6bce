"""Hole-filling quality of a checkpoint against simple baselines, on held-out samples.

    python -m inpaint_online.compare --checkpoint runs/demo/checkpoints/best.pt

Samples: the run's fixed validation set (sources held out of training, fixed crops and warp
parameters from ``data.val_seed``, the samples whose holes cover most texture), rebuilt from
the config stored in the checkpoint; ``--cache-dir`` and ``--count`` may override it, and
``--level N`` draws the same held-out crops at iw3's divergence level N (1–3) instead of the
run's own warp settings (a table per level: how a model holds up at other divergences).
Methods: the model and the classical fills of
:func:`~inpaint_online.baselines.classical_fills` — OpenCV Telea and Navier–Stokes (with
``opencv-python-headless``, the ``eval`` extra), the diffusion fill (harmonic), push-pull
(``model.prefill=pushpull``), *background copy* (each hole pixel takes the nearest known
pixel on its row's background side — what a converter does without a model) and *row
interpolation* (``model.prefill=interp``); the model's own first guess is the one its
``model.prefill`` names. Reports PSNR and SSIM inside the holes, and for clips the
temporal-consistency error (:func:`~inpaint_online.losses.temporal_error`, lower is better).

``--sheet OUT.png`` writes a labelled picture of the samples whose holes cover the most
texture (for clips: the frame of each clip with the most): the input with its holes in
magenta, every method's fill, the target, the model's amplified error, and a zoom on the
densest holes; each row names the source, view, parameters and the PSNR of each method
in that sample's holes.
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch

from .baselines import classical_fills, fill_all, opencv_available
from .cache import open_cache
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from .config import ConfigError, at_least_one, load_config
from .devices import resolve_device
from .errors import DataError, show, user_message
from .fsutil import check_output_file
from .inference import inpaint, load_model
from .iw3net import inner, is_nunif_model_file, nunif_kind
from .losses import batch_scores, mean_scores
from .models import model_offset
from .pictures import error_tile, hole_overlay, sample_label, save_sheet, to_uint8, zoom_on_holes
from .stream import split_records
from .train import hole_texture, validation_batches
from .warp import DIVERGENCE_LEVELS


def sheet_columns(methods: list[str]) -> list[str]:
    """Columns of ``--sheet``: input, every method's fill, target, the model's error, zooms
    on the input, the model, the best-known classical fill present and the target."""
    return ["input (holes magenta)", *methods, "target", "|model - target| x4",
            "zoom: input", "zoom: model", f"zoom: {_zoom_baseline(methods)}", "zoom: target"]


def _zoom_baseline(methods: list[str]) -> str:
    return "opencv telea" if "opencv telea" in methods else "diffusion"


@torch.no_grad()
def compare(checkpoint: str, cache_dir: str | None = None, count: int | None = None,
            device: str = "auto", info: dict | None = None,
            sheet_rows: int = 0, level: int | None = None,
            overrides: tuple[str, ...] = ()) -> dict[str, dict[str, float]]:
    """Scores per method on the run's held-out samples. ``info`` (a dict) receives the
    held-out sources, the number of samples and how many had no hole (left out of the
    hole scores); with ``sheet_rows`` > 0 also ``sheet_rows`` (label, tiles) rows for
    :func:`~inpaint_online.pictures.sheet` with :func:`sheet_columns` of the methods.
    ``level``: draw the held-out samples at iw3's divergence level 1, 2 or 3 instead of the
    run's own warp settings (the same sources and crops, other warps). ``overrides``:
    ``section.key=value`` settings of the held-out samples on top of the run's (e.g.
    ``data.val_composite_p=1``: layered samples, holes with real geometry)."""
    raw = read_checkpoint(checkpoint)
    base = _run_config(checkpoint, raw, cache_dir)
    extra, overrides = list(overrides), [f"run.device={device}"]
    if cache_dir:
        overrides.append(f"data.cache_dir={cache_dir}")
    if count:
        overrides.append(f"data.val_count={count}")
    if level is not None:
        if level not in DIVERGENCE_LEVELS:
            raise ConfigError(f"--level {level}: iw3's divergence levels are 1, 2 and 3")
        for k in ("divergence_choices", "divergence_range"):   # the run's own level's
            base.get("warp", {}).pop(k, None)
        overrides.append(f"warp.level={level}")
    cfg = load_config(None, [*overrides, *extra], base=base)
    dev = resolve_device(cfg.run.device, 0)
    model = load_model(checkpoint, dev, data=raw)
    manifest = open_cache(cfg.data.cache_dir, cfg.data.rgb_from)
    _, val = split_records(manifest.samples(), cfg.data.val_fraction, cfg.data.val_sources)
    batches = validation_batches(cfg, manifest, val, dev)
    if not batches:
        raise ConfigError(f"{cfg.data.cache_dir}: no held-out sources to compare on "
                          "(data.val_fraction is 0 or the cache has one source)")
    best: list[tuple[float, tuple]] = []          # (texture, row): the sheet's rows

    def keep(b, outs):
        best[:] = _keep_best(best, b, outs, sheet_rows)

    rows = held_out_scores(model, batches, classical_fills(), keep if sheet_rows > 0 else None)
    n = sum(len(r["psnr_hole"]) for r in rows["model"])
    if info is not None:
        total = sum(b.mask.shape[0] * (b.mask.shape[1] if b.mask.dim() == 5 else 1) for b in batches)
        info.update(held_out=sorted({r["rel"] for r in val}), samples=total, without_holes=total - n,
                    hole_px=int(sum(b.mask.sum().item() for b in batches)))
        if sheet_rows > 0:
            info["sheet_rows"] = [_sheet_row(*row) for _, row in best]
    return {m: mean_scores(r) | {"samples": n} for m, r in rows.items()}


def held_out_scores(model: torch.nn.Module, batches: list, fills: dict,
                    on_batch=None) -> dict[str, list[dict]]:
    """Per-batch scores (:func:`~inpaint_online.losses.batch_scores`) of the model and of
    every fill in ``fills`` on ``batches`` (iw3's networks: every method scored inside their
    16-px border); ``on_batch(batch, outputs)`` sees each batch's outputs by method."""
    rows = {m: [] for m in ("model", *fills)}
    off = model_offset(model)
    for b in batches:
        outs = {"model": inpaint(model, b.x, b.mask, b.depth)}
        outs |= fill_all(fills, b.x, b.mask, b.depth)
        for name, out in outs.items():
            rows[name].append(batch_scores(inner(out.view(b.y.shape), off), inner(b.y, off),
                                           inner(b.mask, off)))
        if on_batch is not None:
            on_batch(b, outs)
    return rows


def _run_config(checkpoint: str, raw: dict, cache_dir: str | None) -> dict:
    """The config of the run that made ``checkpoint`` (its contents ``raw``); for a nunif
    model file the one it carries (files written by export_model), else the defaults for its
    architecture."""
    if not is_nunif_model_file(raw):
        return copy.deepcopy(load_checkpoint(checkpoint, data=raw)["config"])
    tk = raw.get("train_kwargs") if isinstance(raw.get("train_kwargs"), dict) else {}
    base = copy.deepcopy(tk["config"]) if isinstance(tk.get("config"), dict) else {}
    if not base and not cache_dir:
        raise ConfigError(f"{show(checkpoint)}: a model file without its run's config: "
                          "pass --cache-dir (the held-out sources are drawn from it)")
    kind = nunif_kind(raw.get("name"))
    if kind:
        base.setdefault("model", {})["kind"] = kind
        if "video" in kind:
            base.setdefault("data", {}).setdefault("clip_len", 12)
    return base


def _keep_best(best: list, b, outs: dict, n: int) -> list:
    """``best`` with this batch's samples added, the ``n`` with the most texture in their
    holes kept (for clips, each clip's frame with the most); tensors moved to the CPU."""
    clip = b.y.dim() == 5
    t = b.y.shape[1] if clip else 1
    flat = (lambda v: v.flatten(0, 1)) if clip else (lambda v: v)   # noqa: E731
    frames = type(b)(x=flat(b.x), mask=flat(b.mask), y=flat(b.y), depth=flat(b.depth),
                     params=b.params, meta={})
    tex = hole_texture(frames).view(len(b), t)
    score, j = tex.max(1)
    recs = b.params.records()
    for i in range(len(b)):
        k = i * t + int(j[i])
        row = (b.meta["names"][i] + (f" frame {int(j[i])}" if clip else ""), recs[i],
               frames.x[k].cpu(), frames.mask[k].cpu(), frames.y[k].cpu(),
               {m: o.reshape(-1, *o.shape[-3:])[k].cpu() for m, o in outs.items()})
        best.append((float(score[i]), row))
    best.sort(key=lambda r: -r[0])              # stable: ties keep the drawing order
    return best[:n]


def _sheet_row(name: str, rec: dict, x, mask, y, fills: dict) -> tuple[str, list]:
    hole = mask[0].numpy() > 0
    target = to_uint8(y)
    psnr = {}
    for m, o in fills.items():
        mse = float(((o.float() - y.float()) ** 2).mean(0)[mask[0] > 0].mean())
        psnr[m] = 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-10))).item()
    scores = " | ".join(f"{m} {v:.1f}" for m, v in psnr.items()) + " dB in holes"
    names = list(fills)
    tiles = [hole_overlay(target, hole)] + [to_uint8(fills[m]) for m in names] + [target]
    tiles.append(error_tile(tiles[1], target))
    zoom = zoom_on_holes([tiles[0], tiles[1], tiles[1 + names.index(_zoom_baseline(names))], target], hole)
    return sample_label(name, rec, hole, "", scores), tiles + zoom


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inpaint_online.compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--cache-dir", help="default: the run's data.cache_dir")
    ap.add_argument("--count", type=at_least_one,
                    help="validation samples (default: the run's val_count)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--level", type=int, choices=sorted(DIVERGENCE_LEVELS),
                    help="draw the held-out samples at this iw3 divergence level (default: the run's warp)")
    ap.add_argument("--sheet", metavar="OUT.png",
                    help="write a labelled picture of the fills (the samples with most texture in their holes)")
    ap.add_argument("--sheet-rows", type=int, default=6, help="rows of --sheet (default 6)")
    args = ap.parse_args(argv)
    try:
        if args.sheet:
            check_output_file(args.sheet)               # before the work, not after it
        info: dict = {}
        res = compare(args.checkpoint, args.cache_dir, args.count, args.device, info,
                      sheet_rows=max(1, args.sheet_rows) if args.sheet else 0, level=args.level)
        if args.sheet:
            save_sheet(args.sheet, info["sheet_rows"], sheet_columns(list(res)))
    except (CheckpointError, ConfigError, FileNotFoundError, DataError, ValueError, OSError) as e:
        print(f"compare: error: {user_message(e)}", file=sys.stderr)
        return 2
    tc = "temporal_error" in res["model"]
    print(f"{'method':<22}{'PSNR in holes':>15}{'SSIM in holes':>15}"
          + (f"{'temporal error':>16}" if tc else "")
          + f"   ({res['model']['samples']} held-out {'frames' if tc else 'samples'})")
    for m, r in res.items():
        print(f"{m:<22}{r['psnr_hole']:>12.2f} dB{r['ssim_hole']:>15.3f}"
              + (f"{r['temporal_error']:>16.4f}" if tc else ""))
    if not opencv_available():
        print("(OpenCV is not installed: its Telea and Navier-Stokes fills are left out; "
              "pip install opencv-python-headless, or the project's [eval] extra)")
    unit = "frames" if tc else "samples"
    print(f"held-out sources: {', '.join(info['held_out'])}; {info['samples']} {unit}, "
          f"{info['without_holes']} without any hole (left out of the scores in holes)"
          + (f"; warp level {args.level}" if args.level else ""))
    if args.sheet:
        print(f"wrote {show(args.sheet)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The premise, measured: fresh masks every step (streaming) against fixed datasets of N
samples made once from the same config (iw3's way), same model, same steps, same batch size.

    python benchmarks/online_vs_offline.py --config configs/demo.yaml --out runs/premise

1. Export: ``max(--sizes)`` training samples of ``--config`` to ``OUT/data/full`` (size
   ``--export-size``, default twice the training crop: iw3 stores 512 px and trains on 256-px
   crops); the smaller fixed sets are its first N samples (hard links; nested sets, so the
   arms differ in N only).
2. Train every arm for ``--steps`` steps: ``stream`` (the config as it is) and ``fixed-N``
   (``data.source=folder``: the same model, loss, validation and checkpoints; iw3's crops and
   mask widening as the config sets them; the config's colour jitter), seed ``--seeds[0]``
   first; then the other seeds of ``stream`` and of the best fixed arm (by the validation
   score at the last step). Every run validates every ``--val-every`` steps on the same
   held-out samples (the cache's held-out sources, warped with the fallback depth).
3. Score each run's last checkpoint (equal steps) on three held-out measures:
   ``validation`` (the run's validation set), ``layered`` (the same held-out sources as
   layered composites, ``data.val_composite_p=1``: holes with exact geometry) and
   ``rendered`` (``evaluate_stereo`` on the pairs of ``benchmarks/render_pairs.py``: true
   disocclusions of rendered stereo pairs), beside the untrained model's first guess and the
   best classical fill on the same samples.
4. Print the table (mean ± half the spread over seeds) and write ``OUT/curves.png`` (PSNR in
   the holes of the validation set against the step, mean over seeds) and
   ``OUT/results.json``.

Resumable: a killed run continues where it stopped (exports and training resume; finished
runs and scores are kept). ``--plan`` prints what is left to do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from inpaint_online.cache import has_cache  # noqa: E402
from inpaint_online.compare import compare  # noqa: E402
from inpaint_online.config import load_config  # noqa: E402
from inpaint_online.evaluate_stereo import (  # noqa: E402
    average,
    evaluate_pair,
    find_pairs,
    methods,
    read_pair,
)
from inpaint_online.export import export_dataset  # noqa: E402
from inpaint_online.inference import load_model  # noqa: E402

MEASURES = ("validation", "layered", "rendered")


def arm_names(sizes: list[int]) -> list[str]:
    return ["stream", *(f"fixed-{n}" for n in sizes)]


def run_name(arm: str, seed: int) -> str:
    return f"{arm}-s{seed}"


# ----------------------------------------------------------------------------- 1. data

def make_data(cfg_path: str, out: Path, sizes: list[int], size: int, threads: int,
              overrides: list[str] = ()) -> dict:
    """The fixed sets: ``{N: folder}``; the largest exported, the others its first N."""
    full = out / "data" / "full"
    cfg = load_config(cfg_path, [*overrides, f"run.out_dir={out / 'export_runs'}"])
    biggest = max(sizes)
    t0 = time.perf_counter()
    export_dataset(cfg, full, biggest, 8, size=size, prefix="premise", threads=threads,
                   progress=True)
    print(f"export: {biggest} samples in {full} ({time.perf_counter() - t0:.0f} s this call)")
    folders = {}
    for n in sizes:
        if n == biggest:
            folders[n] = full
            continue
        d = out / "data" / f"first{n}"
        if not (d / "done").exists():
            names = [json.loads(line)["name"] for line in
                     (full / "train" / "premise.index.jsonl").read_text().splitlines()]
            for split, keep in (("train", names[:n]), ("eval", None)):
                (d / split).mkdir(parents=True, exist_ok=True)
                src = full / split
                files = ([src / f"{k}{s}" for k in keep for s in ("_C.png", "_M.png")]
                         if keep is not None else
                         [p for p in src.iterdir() if p.name.endswith(("_C.png", "_M.png"))])
                for f in files:
                    if not (d / split / f.name).exists():
                        os.link(f, d / split / f.name)
            (d / "done").write_text(f"first {n} of {full}\n")
        folders[n] = d
    return folders


# ----------------------------------------------------------------------------- 2. training

def train_args(cfg_path: str, out: Path, arm: str, seed: int, steps: int, val_every: int,
               folders: dict, overrides: list[str] = ()) -> list[str]:
    args = ["--config", cfg_path, *overrides, f"run.out_dir={out / 'runs'}", f"run.name={run_name(arm, seed)}",
            f"run.seed={seed}", f"train.steps={steps}", f"train.val_every={val_every}",
            f"train.ckpt_every={val_every}", f"train.image_every={steps}", "train.log_every=50",
            "train.max_minutes=0"]
    if arm.startswith("fixed-"):
        args += ["data.source=folder", f"data.folder={folders[int(arm[6:])]}",
                 "data.val_from=cache"]
    return args


def val_rows(run: Path) -> list[dict]:
    f = run / "metrics.jsonl"
    if not f.exists():
        return []
    rows = {}
    for line in f.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if r.get("kind") == "val":
            rows[r["step"]] = r
    return [rows[k] for k in sorted(rows)]


def finished(run: Path, steps: int) -> bool:
    rows = val_rows(run)
    return bool(rows) and rows[-1]["step"] >= steps and (run / "checkpoints" / "last.pt").exists()


def train_arm(cfg_path: str, out: Path, arm: str, seed: int, steps: int, val_every: int,
              folders: dict, overrides: list[str] = ()) -> None:
    run = out / "runs" / run_name(arm, seed)
    if finished(run, steps):
        return
    args = train_args(cfg_path, out, arm, seed, steps, val_every, folders, overrides)
    if (run / "checkpoints" / "last.pt").exists():
        args.append("--resume")
    print(f"train {run_name(arm, seed)}: python train_online.py {' '.join(args)}", flush=True)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, str(ROOT / "train_online.py"), "--quiet", *args])
    if p.returncode != 0:
        raise SystemExit(f"online_vs_offline: training {run_name(arm, seed)} stopped with exit "
                         f"code {p.returncode}; run this command again to continue")
    print(f"  {run_name(arm, seed)}: {time.perf_counter() - t0:.0f} s", flush=True)


# ----------------------------------------------------------------------------- 3. scores

def score_run(run: Path, pairs: Path) -> dict:
    """The three measures of a run's last checkpoint (cached in ``run/premise_scores.json``),
    each with the untrained first guess and the best classical fill on the same samples."""
    cache = run / "premise_scores.json"
    ckpt = run / "checkpoints" / "last.pt"
    if cache.exists() and json.loads(cache.read_text()).get("mtime") == ckpt.stat().st_mtime_ns:
        return json.loads(cache.read_text())
    rows = val_rows(run)
    out = {"mtime": ckpt.stat().st_mtime_ns, "curve": [[r["step"], r["psnr_hole"]] for r in rows]}
    for name, extra in (("validation", ()), ("layered", ("data.val_composite_p=1",))):
        res = compare(str(ckpt), device="cpu", overrides=extra)
        out[name] = _with_references(res, rows[0] if name == "validation" else None)
    model = load_model(str(ckpt), "cpu")
    todo, _ = find_pairs(pairs)
    results = [evaluate_pair(read_pair(l, r, d, n), methods(model)) for n, l, r, d in todo]
    for res in results:
        res.pop("_pictures")
    avg = average(results)
    out["rendered"] = {"model": avg["model"]["psnr"],
                       "classical": max((v["psnr"], k) for k, v in avg.items() if k != "model")}
    out["rendered"]["classical"] = list(out["rendered"]["classical"])
    cache.write_text(json.dumps(out))
    return out


def _with_references(res: dict, step0: dict | None) -> dict:
    classical = max((v["psnr_hole"], k) for k, v in res.items() if k != "model")
    d = {"model": res["model"]["psnr_hole"], "ssim": res["model"]["ssim_hole"],
         "classical": list(classical)}
    if step0 is not None and step0["step"] == 0:
        d["first_guess"] = step0["psnr_hole"]
    return d


def first_guess(cfg_path: str, out: Path, pairs: Path, seed: int,
                overrides: list[str] = ()) -> dict:
    """The untrained model's PSNR on the layered samples and the rendered pairs: the weights
    every run of seed ``seed`` starts from (built as the trainer builds them: ``run.seed``,
    then the model). The validation measure's first guess is each run's step-0 row."""
    f = out / f"first_guess_s{seed}.json"
    if f.exists():
        return json.loads(f.read_text())
    from inpaint_online.cache import open_cache
    from inpaint_online.compare import held_out_scores
    from inpaint_online.losses import mean_scores
    from inpaint_online.models import build_model
    from inpaint_online.stream import split_records
    from inpaint_online.train import validation_batches
    cfg = load_config(cfg_path, [*overrides, f"run.seed={seed}", "run.device=cpu",
                                 "data.val_composite_p=1"])
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model).eval()
    manifest = open_cache(cfg.data.cache_dir, cfg.data.rgb_from)
    _, val = split_records(manifest.samples(), cfg.data.val_fraction, cfg.data.val_sources)
    with torch.no_grad():
        rows = held_out_scores(model, validation_batches(cfg, manifest, val, "cpu"), {})["model"]
        todo, _ = find_pairs(pairs)
        results = [evaluate_pair(read_pair(lf, r, d, n), methods(model)) for n, lf, r, d in todo]
    for res in results:
        res.pop("_pictures")
    v = {"layered": mean_scores(rows)["psnr_hole"], "rendered": average(results)["model"]["psnr"]}
    f.write_text(json.dumps(v))
    return v


# ----------------------------------------------------------------------------- 4. report

def spread(values: list[float]) -> str:
    v = np.array(values, float)
    if len(v) == 1:
        return f"{v[0]:6.2f}       "
    return f"{v.mean():6.2f} ± {(v.max() - v.min()) / 2:4.2f}"


def report(scores: dict, out: Path, steps: int, first: dict) -> str:
    lines = [f"PSNR in the holes (dB) of the last checkpoint (step {steps}); mean ± half the "
             "spread over seeds", f"{'arm':<14}{'seeds':>6}  " +
             "  ".join(f"{m:>14}" for m in MEASURES)]
    ref = None
    for arm, by_seed in scores.items():
        if not by_seed:
            continue
        cells = [spread([s[m]["model"] for s in by_seed.values()]) for m in MEASURES]
        lines.append(f"{arm:<14}{len(by_seed):>6}  " + "  ".join(f"{c:>14}" for c in cells))
        ref = ref or next(iter(by_seed.values()))
    if ref is not None:
        fg = [ref["validation"].get("first_guess", float("nan")), first["layered"],
              first["rendered"]]
        lines.append(f"{'first guess':<14}{'':>6}  " + "  ".join(f"{v:>14.2f}" for v in fg))
        cl = [ref[m]["classical"] for m in MEASURES]
        lines.append(f"{'best classical':<14}{'':>6}  " + "  ".join(f"{v:>14.2f}" for v, _ in cl))
        lines.append("best classical fills: " + "; ".join(f"{m} {k}" for m, (_, k) in
                                                          zip(MEASURES, cl)))
    return "\n".join(lines)


COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def plot_curves(curves: dict[str, list[tuple[int, float]]], path: Path, title: str,
                reference: tuple[str, float] | None = None) -> None:
    """PSNR against step, one line per arm, and a grey ``reference`` level (the best classical
    fill) — PIL only: no plotting library is a dependency."""
    W, H, L, R, T, B = 900, 520, 70, 170, 40, 50
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    pts = [p for c in curves.values() for p in c]
    if not pts:
        return
    xs, ys = [p[0] for p in pts], [p[1] for p in pts] + ([reference[1]] if reference else [])
    x0, x1 = 0, max(xs) or 1
    y0, y1 = np.floor(min(ys) * 2) / 2, np.ceil(max(ys) * 2) / 2
    y1 = y1 if y1 > y0 else y0 + 0.5
    X = lambda x: L + (W - L - R) * (x - x0) / (x1 - x0)              # noqa: E731
    Y = lambda y: H - B - (H - T - B) * (y - y0) / (y1 - y0)          # noqa: E731
    d.rectangle([L, T, W - R, H - B], outline="black")
    for k in range(6):
        yv = y0 + (y1 - y0) * k / 5
        d.line([L - 4, Y(yv), L, Y(yv)], fill="black")
        d.text((8, Y(yv) - 6), f"{yv:.2f}", fill="black")
        xv = x0 + (x1 - x0) * k / 5
        d.line([X(xv), H - B, X(xv), H - B + 4], fill="black")
        d.text((X(xv) - 12, H - B + 8), f"{xv:.0f}", fill="black")
    d.text((L, 12), title, fill="black")
    d.text(((W - R) // 2, H - 18), "step", fill="black")
    if reference:
        d.line([L, Y(reference[1]), W - R, Y(reference[1])], fill=(150, 150, 150), width=1)
        d.multiline_text((W - R + 12, Y(reference[1]) - 6), reference[0], fill=(110, 110, 110))
    for i, (arm, c) in enumerate(curves.items()):
        col = COLOURS[i % len(COLOURS)]
        d.line([(X(x), Y(y)) for x, y in c], fill=col, width=2)
        d.line([W - R + 12, T + 20 * i + 8, W - R + 36, T + 20 * i + 8], fill=col, width=3)
        d.text((W - R + 42, T + 20 * i + 2), arm, fill="black")
    img.save(path)


def mean_curve(runs: list[list[list[float]]]) -> list[tuple[int, float]]:
    steps = sorted(set.intersection(*[{s for s, _ in r} for r in runs])) if runs else []
    return [(s, float(np.mean([dict(map(tuple, r))[s] for r in runs]))) for s in steps]


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--out", default="runs/premise")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--val-every", type=int, default=100)
    ap.add_argument("--export-size", type=int, default=0, help="default: 2 x data.crop")
    ap.add_argument("--export-threads", type=int, default=2)
    ap.add_argument("--pairs", default="", help="rendered pairs (default: OUT/pairs, made by "
                    "benchmarks/render_pairs.py)")
    ap.add_argument("--plan", action="store_true", help="print what is left to do, and stop")
    ap.add_argument("--report", action="store_true", help="score and report the finished runs only")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                    help="config overrides for every arm, the export and the scores (e.g. "
                    "data.cache_dir=runs/mine/cache); kept in OUT/overrides.json, and a later "
                    "call with other ones is refused (the arms would no longer compare)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    try:
        cfg = load_config(a.config, a.overrides)
    except (ValueError, FileNotFoundError) as e:
        print(f"online_vs_offline: {e}", file=sys.stderr)
        return 2
    kept = out / "overrides.json"
    if kept.exists() and json.loads(kept.read_text()) != {"config": a.config,
                                                           "overrides": a.overrides}:
        print(f"online_vs_offline: {out} was started with {kept.read_text().strip()}; this call "
              f"has config {a.config} and overrides {a.overrides}: use the same ones to continue, "
              "or another --out", file=sys.stderr)
        return 2
    if not has_cache(cfg.data.cache_dir):
        print(f"online_vs_offline: {cfg.data.cache_dir}: no depth cache; make it first (see the "
              "config's header)", file=sys.stderr)
        return 2
    size = a.export_size or 2 * cfg.data.crop
    arms = arm_names(a.sizes)
    first, rest = a.seeds[0], a.seeds[1:]
    if a.plan:
        for arm in arms:
            for s in a.seeds:
                done = finished(out / "runs" / run_name(arm, s), a.steps)
                print(f"{run_name(arm, s):<20}{'done' if done else 'to do'}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    if not kept.exists():
        kept.write_text(json.dumps({"config": a.config, "overrides": a.overrides}) + "\n")
    pairs = Path(a.pairs) if a.pairs else out / "pairs"
    if not (pairs.is_dir() and find_pairs(pairs)[0]):
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "render_pairs.py"), "--out",
                        str(pairs)], check=True)
    folders = {}
    if not a.report:
        # the stream first (it needs no export), then the fixed sets, largest first
        train_arm(a.config, out, "stream", first, a.steps, a.val_every, folders, a.overrides)
        folders = make_data(a.config, out, a.sizes, size, a.export_threads, a.overrides)
        for arm in sorted(arms[1:], key=lambda x: -int(x[6:])):
            train_arm(a.config, out, arm, first, a.steps, a.val_every, folders, a.overrides)
    runs_dir = out / "runs"
    best_fixed = None
    finals = {arm: val_rows(runs_dir / run_name(arm, first)) for arm in arms[1:]}
    finals = {k: v[-1]["psnr_hole"] for k, v in finals.items() if v and v[-1]["step"] >= a.steps}
    if finals:
        best_fixed = max(finals, key=finals.get)
    if not a.report and best_fixed is not None:
        for s in rest:
            for arm in ("stream", best_fixed):
                train_arm(a.config, out, arm, s, a.steps, a.val_every, folders, a.overrides)
    scores, curves = {}, {}
    for arm in arms:
        scores[arm] = {}
        for s in a.seeds:
            run = runs_dir / run_name(arm, s)
            if finished(run, a.steps):
                scores[arm][s] = score_run(run, pairs)
        if scores[arm]:
            curves[f"{arm} ({len(scores[arm])} seed{'s' * (len(scores[arm]) > 1)})"] = \
                mean_curve([v["curve"] for v in scores[arm].values()])
    fr = first_guess(a.config, out, pairs, first, a.overrides)
    table = report(scores, out, a.steps, fr)
    print(table)
    if best_fixed:
        print(f"best fixed arm (validation at step {a.steps}, seed {first}): {best_fixed}")
    ref = next((v for by in scores.values() for v in by.values()), None)
    plot_curves(curves, out / "curves.png",
                f"{a.config}: PSNR in the holes of the held-out validation set vs step",
                (f"best classical fill:\n{ref['validation']['classical'][1]} "
                 f"{ref['validation']['classical'][0]:.2f}", ref["validation"]["classical"][0])
                if ref else None)
    (out / "results.json").write_text(json.dumps(
        {"config": a.config, "overrides": a.overrides, "steps": a.steps, "sizes": a.sizes, "seeds": a.seeds,
         "export_size": size, "best_fixed": best_fixed, "scores": scores,
         "first_guess": fr, "table": table}, indent=1))
    print(f"wrote {out / 'curves.png'} and {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

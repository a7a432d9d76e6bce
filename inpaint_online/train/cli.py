"""Train a disocclusion inpainting model on hole masks made online from the depth cache.

    python train_online.py --config configs/demo.yaml
    python train_online.py --config configs/image.yaml data.cache_dir=cache/ run.name=big
    python train_online.py --config configs/image.yaml run.name=big --resume
    python train_online.py --config configs/image.yaml --export-dir data/ --export-count 100000
    torchrun --nproc_per_node 8 train_online.py --config configs/image.yaml run.name=big

Overrides are ``section.key=value`` (YAML values: ``warp.closing_choices=[[5,5],[3,3]]``).
Errors in the input (config, cache, checkpoint, files) print one line; INPAINT_DEBUG=1 shows
the traceback instead.
The run writes ``<run.out_dir>/<run.name>/``: ``config.yaml``, ``checkpoints/last.pt`` and
``best.pt``, ``metrics.jsonl`` and TensorBoard logs in ``tb/``.
"""

import argparse
import logging
import os
import sys

__all__ = ["main"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="train_online.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML config (configs/*.yaml); defaults when omitted")
    ap.add_argument("--resume", action="store_true",
                    help="continue the run from <run dir>/checkpoints/last.pt (without --config: "
                         "with the config saved in the run dir)")
    ap.add_argument("--export-dir", help="write generated pairs to DIR (iw3 layout) instead of training")
    ap.add_argument("--export-count", type=int, help="training samples to export (with --export-dir)")
    ap.add_argument("--export-eval-count", type=int,
                    help="evaluation samples from the held-out sources (default: a tenth of "
                    "--export-count, at least 64 images — iw3's trainer evaluates images in "
                    "batches of its --batch-size — or 8 clips)")
    ap.add_argument("--export-size", type=int,
                    help="side of the stored samples (default: 512 where the frames allow it, "
                         "never below iw3's 256)")
    ap.add_argument("--export-clip-len", type=int,
                    help="frames per exported clip, video configs (default 16; iw3 takes 12)")
    ap.add_argument("--export-prefix",
                    help="sample name prefix (default: derived from the settings, stable on resume)")
    ap.add_argument("--export-force", action="store_true",
                    help="write an export iw3's trainer could not read (small size, short clips, "
                         "few eval samples) for another reader")
    ap.add_argument("--export-threads", type=int, default=8, help="PNG writer threads")
    ap.add_argument("--export-min-yield", type=float, default=0.25,
                    help="leave out sources that keep about this share of their samples or fewer "
                         "(too few holes at this warp level; a sequential test from a source's "
                         "first drop, see docs/export.md; 0: keep every source)")
    ap.add_argument("--no-masked-input", action="store_true",
                    help="write only *_C.png and *_M.png (not the masked input *_I.png)")
    ap.add_argument("--init-from", metavar="CKPT",
                    help="start from CKPT's model weights (fine-tune; same model config), with a "
                         "fresh optimiser and step count (= train.init_from=CKPT)")
    ap.add_argument("--print-config", action="store_true",
                    help="print the resolved config (file + overrides) as YAML and exit")
    ap.add_argument("--dry-run", action="store_true",
                    help="build everything, train one batch (and validate), write nothing to the "
                         "run dir, exit")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("overrides", nargs="*",
                    help="section.key=value config overrides (before or after the flags)")
    args = ap.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from ..checkpoint import CheckpointError
    from ..config import ConfigError, load_config
    from ..errors import DataError, describe, user_message, worker_died
    try:
        overrides = list(args.overrides) + ([f"train.init_from={args.init_from}"]
                                            if args.init_from else [])
        cfg = load_config(args.config, overrides)
        saved = cfg.run_dir / "config.yaml"
        if args.resume and args.config is None and saved.is_file():
            # `--resume run.name=X` alone continues X with the config it was started with
            cfg = load_config(saved, overrides)
        if args.print_config:
            import yaml
            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
            return 0
        if args.export_dir:
            if args.export_count is None:
                ap.error("--export-dir needs --export-count N")
            from ..export import export_dataset
            try:
                s = export_dataset(cfg, args.export_dir, args.export_count, args.export_eval_count,
                                   size=args.export_size, clip_len=args.export_clip_len,
                                   prefix=args.export_prefix, force=args.export_force,
                                   threads=args.export_threads, masked_input=not args.no_masked_input,
                                   progress=not args.quiet, min_yield=args.export_min_yield)
            except KeyboardInterrupt:
                print("train_online.py: export interrupted; the committed samples are kept: run "
                      "the same command again to finish", file=sys.stderr)
                return 130
            print(s.describe(args.export_dir))
            return 0
        from .loop import train
        from .validation import verdict
        if args.dry_run:
            import tempfile
            real = cfg.run_dir
            with tempfile.TemporaryDirectory(prefix="inpaint_dry_run_") as tmp:
                cfg.run.out_dir, cfg.train.stop_at = tmp, 1
                res = train(cfg, resume=False, progress=False)
            loss = res.history[-1]["loss"] if res.history else float("nan")
            val = res.val[-1] if res.val else {}
            score = (f" (validation PSNR in holes {val['psnr_hole']:.2f} dB, SSIM "
                     f"{val['ssim_hole']:.3f})" if val else "")
            print(f"dry run: built the data stream, the model and the optimiser, trained one "
                  f"batch (loss {loss:.4f}) and validated{score}; nothing was written to {real}")
            return 0
        res = train(cfg, resume=args.resume, progress=not args.quiet)
    except (ConfigError, CheckpointError, FileNotFoundError, DataError, ValueError, OSError) as e:
        if os.environ.get("INPAINT_DEBUG"):
            raise
        msg = user_message(e) if isinstance(e, FileNotFoundError) else describe(e)
        print(f"train_online.py: error: {msg}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"train_online.py: error: {worker_died(e, 'training stopped')}; the last "
              "checkpoint is kept and resumes exactly: run the same command with --resume "
              "(fewer data.num_workers or a smaller data.prefetch_factor need less memory)",
              file=sys.stderr)
        return 2
    if res.run_dir is not None and (res.val or res.history):
        last = res.val[-1] if res.val else {}
        extra = (f"; validation PSNR in holes {last['psnr_hole']:.2f} dB, "
                 f"SSIM {last['ssim_hole']:.3f}" if last else "")
        line, warn = verdict(res.best)
        print(f"stopped at step {res.step}{extra}" + (f"\n{line}" if line else ""))
        if warn:
            print(_warning(res.best), file=sys.stderr)
        print(f"checkpoints: {res.run_dir / 'checkpoints'}\n"
              f"TensorBoard: tensorboard --logdir {res.run_dir.parent} (run {res.run_dir.name})")
    # a stop before train.steps is not a finished run: a scheduler must not read it as one
    if res.stopped == "sigterm":
        print(f"train_online.py: stopped by SIGTERM at step {res.step}; exit code 143 (the run "
              "is not finished: requeue it with --resume)", file=sys.stderr)
        return 143
    if res.stopped == "interrupt":
        return 130
    return 0


def _warning(best: dict) -> str:
    """The loud line when training did not beat what a user gets without it."""
    if best.get("step") == 0:
        what = "no step scored above the untrained model: best.pt is the untrained model"
    else:
        what = ("the best model is not better than the best classical fill"
                + (" on both validation sets" if best.get("layered") else ""))
    lay = best.get("layered")
    also = (f"; layered samples {lay['value']:.3f}, first guess {lay['first_guess']:.3f}, "
            f"'{lay['classical_name']}' {lay['classical']:.3f}" if lay else "")
    return (f"WARNING: {what} (validation {best['metric']} {best['value']:.3f}, first guess "
            f"{best['first_guess']:.3f}, '{best['classical_name']}' {best['classical']:.3f}"
            f"{also}); a classical fill serves you better than this model — train longer, on "
            "more data, or from other weights (train.init_from)")

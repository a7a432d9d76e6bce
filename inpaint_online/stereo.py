"""Render a stereo pair from one image: forward-warp to the left and right views with the
warp core, fill the disocclusions with a trained model, write a side-by-side image.

    python -m inpaint_online.stereo --checkpoint CKPT --image photo.jpg --depth photo_depth.png \\
        --divergence 2.5 --convergence 0.5 --output photo_LR.png
    python -m inpaint_online.stereo --checkpoint CKPT --image photo.jpg --depth-model MiDaS_small \\
        --output photo_LR.png --save-views --save-masks --save-sheet

``--divergence`` (% of the image width) and ``--convergence`` (0 = the farthest point on
the screen plane, 1 = the nearest) mean what they mean in iw3. Depth: a map file
(``.npy``/16-bit ``.png``/``.pfm``; ``--depth-kind depth`` if larger = farther) or a depth
model (``MiDaS_small``/``DPT_*`` with local weights, or ``fallback_lowquality``).
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import CheckpointError
from .depth import (
    FALLBACK,
    MIDAS_MODELS,
    DepthBackend,
    DepthRequest,
    DepthSetupError,
    ImportBackend,
    make_backend,
)
from .errors import describe, show
from .fsutil import check_output_file, save_image, sweep_temp, temp_path
from .inference import (
    FILLS,
    image_to_tensor,
    load_depth_file,
    load_fill,
    render_stereo,
    split_border_band,
    tensor_to_image,
)
from .media import MediaError, VideoReader, load_image
from .models import TemporalGatedUNet
from .pictures import (
    depth_picture,
    fit_width,
    hole_overlay,
    save_sheet,
    to_uint8,
    zoom_on_holes,
)


def depth_backend(args) -> DepthBackend:
    """The backend ``--depth-model`` names (with ``--weights`` / ``--hub-dir``); a folder
    is a ``transformers`` depth model (the ``hf`` backend)."""
    if args.depth_model == FALLBACK:
        return make_backend(FALLBACK, device=args.device)
    if args.depth_model not in MIDAS_MODELS:
        return make_backend("hf", hf_model=args.depth_model, device=args.device)
    return make_backend("midas", model=args.depth_model, weights=args.weights,
                        hub_dir=args.hub_dir, device=args.device)


def estimate_depth(backend: DepthBackend, frames: np.ndarray, path: Path,
                   idx: list[int], span: "RunningSpan | None" = None) -> np.ndarray:
    """Inverse depth in [0, 1] ``(T, H, W)`` at the size of ``frames`` ``(T, H, W, 3)``:
    min-max per frame, or with ``span`` (video) in the range the clip so far shares."""
    req = DepthRequest(path, path.name, idx, size=(frames.shape[2], frames.shape[1]))
    if span is None:
        d = torch.from_numpy(np.asarray(backend.predict(frames, req), np.float32))
    else:
        raw = np.asarray(backend.predict_raw(frames, req), np.float32)
        lo, hi = span.update(raw)
        d = ((torch.from_numpy(raw) - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
    return F.interpolate(d[:, None], frames.shape[1:3], mode="bilinear",
                         align_corners=False)[:, 0].numpy()


class RunningSpan:
    """The depth range of a video rendered chunk by chunk: the first chunk's robust
    percentiles (as the depth cache's ``--video-norm clip``), then a running average of each
    chunk's (``momentum`` per chunk), so a surface keeps its depth across chunks while the
    range still follows a change of scene within a few chunks."""

    def __init__(self, momentum: float = 0.8):
        self.momentum, self.lo, self.hi = momentum, None, None

    def update(self, raw: np.ndarray) -> tuple[float, float]:
        from .depth import clip_span
        lo, hi = clip_span(raw)
        if self.lo is None:
            self.lo, self.hi = lo, hi
        else:
            m = self.momentum
            self.lo, self.hi = m * self.lo + (1 - m) * lo, m * self.hi + (1 - m) * hi
        return self.lo, self.hi


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m inpaint_online.stereo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="the trained model (a checkpoint or a nunif model "
                    "file; not needed with --fill background)")
    ap.add_argument("--fill", choices=FILLS, default="auto",
                    help="what fills the holes: the model, the background push-pull fill, or "
                    "auto (default): whichever the checkpoint's validation scored higher")
    inp = ap.add_mutually_exclusive_group(required=True)
    inp.add_argument("--image", help="an image")
    inp.add_argument("--video", help="a video: writes a side-by-side video (OUTPUT.mp4)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--depth", help="depth/disparity map of the image; for --video a folder of "
                                     "per-frame maps NNNNNN.{npy,png,pfm} (frame index, 6 digits)")
    src.add_argument("--depth-model", metavar="MODEL",
                     help=f"estimate depth with {', '.join([*MIDAS_MODELS, FALLBACK])} (weights must "
                          "be local) or a transformers depth model folder (the hf backend)")
    ap.add_argument("--depth-kind", choices=["disparity", "depth"], default="disparity",
                    help="for --depth: disparity/inverse depth (default) or depth (larger = farther)")
    ap.add_argument("--weights", help="depth model weights file")
    ap.add_argument("--hub-dir", help="local MiDaS hub clone (DPT models)")
    ap.add_argument("--divergence", type=float, default=2.0, help="%% of the width (iw3's meaning)")
    ap.add_argument("--convergence", type=float, default=0.5)
    ap.add_argument("--output", required=True, help="side-by-side image (left | right)")
    ap.add_argument("--save-views", action="store_true", help="also write OUTPUT_L.png, OUTPUT_R.png")
    ap.add_argument("--save-holes", "--save-masks", dest="save_masks", action="store_true",
                    help="also write the hole masks OUTPUT_L_mask.png, OUTPUT_R_mask.png")
    ap.add_argument("--save-sheet", action="store_true",
                    help="also write OUTPUT_sheet.png: per view the warped image with its holes "
                         "in magenta, the fill, and both zoomed on the densest interior holes")
    ap.add_argument("--save-depth", action="store_true",
                    help="also write the depth used, OUTPUT_depth.png (colour-mapped, near bright)")
    ap.add_argument("--mode", choices=["bilinear", "nearest"], default="bilinear")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tile", type=int, default=1024)
    v = ap.add_argument_group("video")
    v.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0 = all)")
    v.add_argument("--chunk", type=int, default=8,
                   help="frames per model call (a temporal model sees them as one clip)")
    v.add_argument("--crf", type=int, default=18, help="x264 quality (lower = better)")
    v.add_argument("--sheet-frame", type=int, default=-1,
                   help="with --save-sheet: the frame the sheet shows (default: the middle one)")
    v.add_argument("--no-audio", action="store_true",
                   help="leave the audio out (by default the input's audio track is copied)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 <= args.divergence <= 20 or not 0 <= args.convergence <= 1:
        print("stereo: error: --divergence must be in [0, 20] (%) and --convergence in [0, 1]",
              file=sys.stderr)
        return 2
    if args.video:
        return video_main(args)
    try:
        check_output_file(args.output)              # before any work, not after it
        model, fill = load_fill(args.checkpoint, args.fill, args.device, "stereo")
        path = Path(args.image)
        rgb = load_image(path)
        if args.depth:
            d = load_depth_file(Path(args.depth), args.depth_kind, rgb.shape[:2])
        else:
            d = estimate_depth(depth_backend(args), rgb[None], path, [0])[0]
        out = render_stereo(model, image_to_tensor(rgb, args.device),
                            torch.from_numpy(d)[None, None].to(args.device).float(),
                            args.divergence, args.convergence, mode=args.mode, tile=args.tile,
                            fill=fill, progress=not args.quiet)
        o = Path(args.output)
        save_image(o, tensor_to_image(out["sbs"]))
        written = [o]
        for view, tag in (("left", "L"), ("right", "R")):
            if args.save_views:
                written.append(o.with_name(f"{o.stem}_{tag}.png"))
                save_image(written[-1], tensor_to_image(out[view]))
            if args.save_masks:
                written.append(o.with_name(f"{o.stem}_{tag}_mask.png"))
                save_image(written[-1], out[f"{view}_hole"][0, 0].cpu().numpy().astype(np.uint8) * 255)
        if args.save_depth:
            written.append(o.with_name(f"{o.stem}_depth.png"))
            save_image(written[-1], depth_picture(d))
        if args.save_sheet:
            written.append(out_sheet_path(o))
            save_sheet(written[-1], stereo_sheet(out, d, args.divergence, args.convergence),
                       SHEET_COLUMNS)
    except (CheckpointError, MediaError, DepthSetupError, ValueError, OSError) as e:
        print(f"stereo: error: {describe(e)}", file=sys.stderr)
        return 2
    print(f"holes filled: {hole_report(out)}; wrote {', '.join(map(show, written))}")
    return 0


SHEET_COLUMNS = ["warped (holes magenta)", "filled", "depth (bright = near)", "zoom: holes",
                 "zoom: filled"]
SHEET_WIDTH = 960          # whole views in a sheet: at most this wide
ZOOM_SIDE = 240            # the zoom's window at full resolution: at most this side


def stereo_sheet(out: dict, depth: np.ndarray, divergence: float, convergence: float,
                 what: str = "") -> list:
    """Rows (left view, right view) of the labelled sheet of ``--save-sheet``: views as they
    are written (not mirrored); the zoom is on the densest *interior* holes (the border band
    is a strip at the frame edge and says nothing about the fill)."""
    rows = []
    for view in ("left", "right"):
        hole = out[f"{view}_hole"][0, 0].cpu()
        interior, band = split_border_band(hole)
        h = hole.numpy()
        warped, filled = to_uint8(out[f"{view}_warped"][0]), to_uint8(out[view][0])
        tiles = [hole_overlay(warped, h), filled, depth_picture(depth)]
        focus = interior.numpy() if interior.any() else h
        # a 12-Mpx photo made an 18000-px sheet: whole views at most SHEET_WIDTH wide, zooms
        # on a window of at most ZOOM_SIDE px around the holes, enlarged to about that size
        small = [fit_width(t, SHEET_WIDTH) for t in tiles]
        side = min(ZOOM_SIDE, min(h.shape) // 4)
        factor = max(1, min(4, small[0].shape[0] // max(side, 1)))
        note = ("" if interior.any() else
                "; no interior holes: the zoom shows the border band" if h.any() else
                "; no holes at all")
        label = (f"{what + ', ' if what else ''}{view} view, div {divergence:g}% conv "
                 f"{convergence:g}, holes {100 * h.mean():.2f}% "
                 f"({100 * interior.float().mean():.2f}% interior, "
                 f"{100 * band.float().mean():.2f}% border band){note}")
        rows.append((label, small + zoom_on_holes(tiles[:2], focus, factor, side=side)))
    return rows


def hole_report(out: dict) -> str:
    """'left 1.20% (0.85% interior, 0.35% border band), right ...' of the frame."""
    parts = []
    for view in ("left", "right"):
        hole = out[f"{view}_hole"]
        interior, band = split_border_band(hole)
        parts.append(f"{view} {100 * hole.float().mean().item():.2f}% "
                     f"({100 * interior.float().mean().item():.2f}% interior, "
                     f"{100 * band.float().mean().item():.2f}% border band)")
    return ", ".join(parts) + " of the frame"


def video_main(args) -> int:
    """Stereo for a video: chunks of frames → depth → render_stereo → x264 side by side."""
    import av
    try:
        check_output_file(args.output, image=False)
        if Path(args.output).suffix.lower() not in (".mp4", ".mkv", ".mov"):
            raise ValueError(f"{show(args.output)}: a video output needs .mp4, .mkv or .mov")
        model, fill = load_fill(args.checkpoint, args.fill, args.device, "stereo")
        path = Path(args.video)
        reader = VideoReader(path)
        backend = depth_backend(args) if args.depth_model else None
        if backend is None and not Path(args.depth).is_dir():
            raise MediaError(f"{args.depth}: for --video, --depth must be a folder of per-frame maps")
    except (CheckpointError, MediaError, DepthSetupError, ValueError, OSError) as e:
        print(f"stereo: error: {describe(e)}", file=sys.stderr)
        return 2
    info = reader.info
    n = min(info.num_frames, args.max_frames) if args.max_frames > 0 else info.num_frames
    sheet_at = (n // 2 if args.sheet_frame < 0 else args.sheet_frame) if args.save_sheet else None
    if sheet_at is not None and not 0 <= sheet_at < n:
        print(f"stereo: error: --sheet-frame {sheet_at}: the output has frames 0..{n - 1}",
              file=sys.stderr)
        return 2
    sheet_path = out_sheet_path(Path(args.output)) if sheet_at is not None else None
    clip = isinstance(model, TemporalGatedUNet)
    out_path = Path(args.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sweep_temp(out_path.parent)        # what a killed run left (its writer is dead)
    tmp = temp_path(out_path)
    container_format = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov"}[out_path.suffix.lower()]
    w2, h2 = 2 * info.width, info.height + info.height % 2      # x264 wants even sides
    holes = []
    span = RunningSpan()
    audio_note = ""
    bar = tqdm(total=n, desc=f"stereo {path.name}", unit="frame", disable=args.quiet,
               dynamic_ncols=True)
    try:
        with av.open(str(tmp), "w", format=container_format) as container:
            rate = Fraction(info.fps).limit_denominator(1001) if info.fps > 0 else Fraction(25)
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = w2, h2, "yuv420p"
            stream.options = {"crf": str(args.crf)}
            audio = None if args.no_audio else AudioCopy(path, container, n / float(rate))
            audio_note = audio.note if audio is not None else "; audio left out (--no-audio)"
            for start in range(0, n, max(1, args.chunk)):
                idx = list(range(start, min(n, start + args.chunk)))
                frames = reader.get_batch(idx)
                if backend is not None:
                    d = estimate_depth(backend, frames, path, idx, span)
                else:
                    d = np.stack([load_depth_file(_frame_map(Path(args.depth), i), args.depth_kind,
                                             frames.shape[1:3]) for i in idx])
                x = torch.from_numpy(frames).permute(0, 3, 1, 2).to(args.device).float() / 255
                out = render_stereo(model, x, torch.from_numpy(d)[:, None].to(args.device).float(),
                                    args.divergence, args.convergence, mode=args.mode,
                                    tile=args.tile, clip=clip, fill=fill)
                holes.append(out["right_hole"].float().mean().item())
                if sheet_at is not None and start <= sheet_at < start + len(idx):
                    j = sheet_at - start
                    one = {k: v[j:j + 1] for k, v in out.items()}
                    save_sheet(sheet_path, stereo_sheet(one, d[j], args.divergence,
                                                        args.convergence, f"frame {sheet_at}"),
                               SHEET_COLUMNS)
                bar.update(len(idx))
                for sbs in out["sbs"]:
                    img = tensor_to_image(sbs)
                    if img.shape[:2] != (h2, w2):
                        img = np.pad(img, ((0, h2 - img.shape[0]), (0, w2 - img.shape[1]), (0, 0)), mode="edge")
                    for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
            if audio is not None:
                audio.copy()
        tmp.replace(out_path)
    except (MediaError, DepthSetupError, ValueError, OSError) as e:
        bar.close()
        tmp.unlink(missing_ok=True)
        print(f"stereo: error: {describe(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        bar.close()
        tmp.unlink(missing_ok=True)
        print(f"stereo: interrupted; nothing was written to {show(out_path)}", file=sys.stderr)
        return 130
    finally:
        bar.close()
    print(f"wrote {out_path}: {n} frames, {w2}x{h2} side by side, "
          f"{'temporal clips of ' + str(args.chunk) if clip else 'frame by frame'}"
          f"{' (background fill)' if fill == 'background' else ''}; "
          f"right-view holes {100 * float(np.mean(holes)):.2f}% of the frame{audio_note}"
          + (f"; sheet of frame {sheet_at}: {show(sheet_path)}" if sheet_path else ""))
    return 0


def out_sheet_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}_sheet.png")


class AudioCopy:
    """The input video's first audio track, copied into the output (no re-encoding) up to
    ``seconds`` (the written frames' duration: ``--max-frames`` cuts the sound too). A codec
    the container cannot hold is re-encoded to AAC; ``note`` says what happened."""

    def __init__(self, source: Path, container, seconds: float):
        import av
        self.container, self.seconds, self.out, self.encode = container, seconds, None, False
        self.src = av.open(str(source))
        self.stream = next((st for st in self.src.streams if st.type == "audio"), None)
        if self.stream is None:
            self.src.close()
            self.note = "; the input has no audio"
            return
        try:
            self.out = container.add_stream_from_template(self.stream)
            self.note = f"; audio copied ({self.stream.codec_context.name})"
        except (ValueError, av.error.FFmpegError):
            self.out = container.add_stream("aac", rate=self.stream.codec_context.sample_rate or 48000)
            self.encode = True
            self.note = f"; audio re-encoded to AAC ({self.stream.codec_context.name} does not fit)"

    def copy(self) -> None:
        if self.stream is None:
            return
        try:
            tb = self.stream.time_base
            for packet in self.src.demux(self.stream):
                if packet.dts is None:
                    continue
                if packet.pts is not None and float(packet.pts * tb) >= self.seconds:
                    break
                if self.encode:
                    for frame in packet.decode():
                        frame.pts = None
                        for p in self.out.encode(frame):
                            self.container.mux(p)
                else:
                    packet.stream = self.out
                    self.container.mux(packet)
            if self.encode:
                for p in self.out.encode():
                    self.container.mux(p)
        finally:
            self.src.close()



def _frame_map(folder: Path, frame: int) -> Path:
    for ext in ImportBackend.EXTS:
        p = folder / f"{frame:06d}{ext}"
        if p.is_file():
            return p
    raise MediaError(f"{folder}: no depth map for frame {frame} ({frame:06d}.npy/.png/.pfm)")


if __name__ == "__main__":
    sys.exit(main())

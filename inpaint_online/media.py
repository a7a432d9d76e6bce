"""Reading raw media: image files normalised to RGB, videos behind a small reader interface,
and frame sampling.

Images: jpg/png/webp/bmp/tiff, 8- and 16-bit, grayscale, RGBA, palette, CMYK, EXIF rotation
→ ``uint8`` RGB ``(H, W, 3)`` numpy arrays. Videos are decoded with decord (the named
dependency); PyAV stands in where decord is missing. Both sit behind :class:`VideoReader`,
so another decoder (torchcodec) can be added without touching callers (docs/design.md,
"Facts the code relies on").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import one_line, show

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v"}


class MediaError(Exception):
    """A media file that cannot be read; the message names the file and the reason."""


def media_kind(path: str | os.PathLike) -> str | None:
    ext = Path(path).suffix.lower()
    if ext in IMAGE_EXTS:
        return "image"
    if ext in VIDEO_EXTS:
        return "video"
    return None


def find_media(inputs: list[str | os.PathLike]) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """Walk files and folders. Returns ``([(root, path)], [(path, reason)])``: supported
    files with the root they were found under (for relative names), in a stable order, and
    inputs that were skipped (missing, unsupported, a folder that cannot be read).

    Linked folders are followed; a folder reached again (a link loop) is not walked twice.
    """
    found, skipped = [], []
    for inp in inputs:
        p = Path(inp)
        if p.is_dir():
            seen: set[tuple[int, int]] = set()

            def unreadable(e: OSError) -> None:
                skipped.append((Path(e.filename or p),
                                f"cannot read folder ({e.strerror or type(e).__name__})"))

            for dirpath, dirnames, filenames in os.walk(p, onerror=unreadable, followlinks=True):
                try:
                    st = os.stat(dirpath)
                    ident = (st.st_dev, st.st_ino)
                except OSError as e:
                    unreadable(e)
                    dirnames[:] = []
                    continue
                if ident in seen:          # a linked folder we have walked already
                    dirnames[:] = []
                    continue
                seen.add(ident)
                dirnames.sort()
                for name in sorted(filenames):
                    f = Path(dirpath) / name
                    if media_kind(f):
                        found.append((p, f))
        elif p.is_file():
            if media_kind(p):
                found.append((p.parent, p))
            else:
                skipped.append((p, f"unsupported file type '{p.suffix}'"))
        elif p.is_symlink():
            found.append((p.parent, p))    # a broken link or a loop: reported by its reader
        else:
            skipped.append((p, "no such file or directory"))
    return found, skipped


def load_image(path: str | os.PathLike, at_least: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image as ``uint8`` RGB ``(H, W, 3)``, EXIF rotation applied.

    16-bit images are scaled to 8 bits, grayscale/palette/CMYK converted, alpha dropped.
    ``at_least=(w, h)``: the caller will shrink the image to that size, so a JPEG may be
    decoded reduced (Pillow's ``draft``: 1/2, 1/4 or 1/8 scale in the DCT, never below the
    size asked for) — a 12-Mpx photo wanted at 1024 px decodes ~4x faster.
    Raises :class:`MediaError` naming the file for anything unreadable: also a file that
    declares more pixels than Pillow's decompression-bomb limit, and a float image with
    non-finite pixels.
    """
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    name = show(path)
    try:
        if path.stat().st_size == 0:
            raise MediaError(f"{name}: empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if at_least is not None and im.format == "JPEG":
                    w, h = at_least
                    if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):   # stored rotated by 90°
                        w, h = h, w
                    im.draft(im.mode, (w, h))
                im = ImageOps.exif_transpose(im)
                im.load()
                return _to_rgb8(im, name)
    except MediaError:
        raise
    except Image.DecompressionBombError as e:
        raise MediaError(f"{name}: refused: {one_line(e)} (a decompression bomb, or raise "
                         "PIL.Image.MAX_IMAGE_PIXELS if the image is real)") from None
    except UnidentifiedImageError:
        raise MediaError(f"{name}: not a readable image (unknown or corrupt format)") from None
    except FileNotFoundError:
        raise MediaError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise MediaError(f"{name}: is a folder, not an image") from None
    except PermissionError:
        raise MediaError(f"{name}: permission denied") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise MediaError(f"{name}: cannot decode image ({one_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - decoders raise anything (MemoryError too)
        raise MediaError(f"{name}: cannot decode image ({type(e).__name__}: {one_line(e)})") from None


def _to_rgb8(im, name: str = "image") -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im).astype(np.float64)
        if im.mode == "F":
            bad = int((~np.isfinite(a)).sum())
            if bad:
                raise MediaError(f"{name}: float image with {bad} non-finite (NaN/inf) pixels "
                                 f"of {a.size}; not used")
            # float data: [0, 1] as it is, larger ranges scaled by their maximum
            hi = max(1.0, float(a.max()))
        else:
            # 16-bit (or 32-bit int) data: scale by the type's range, not the image's
            hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # composite on black: what a viewer of the RGB channels would see is undefined
        im = im.convert("RGBA")
        a = np.asarray(im).astype(np.float32)
        rgb = a[..., :3] * (a[..., 3:4] / 255.0)
        return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    if im.mode != "RGB":
        im = im.convert("RGB")   # L, P, CMYK, YCbCr, 1
    return np.ascontiguousarray(np.asarray(im))


@dataclass
class VideoInfo:
    num_frames: int
    fps: float
    width: int
    height: int


class VideoReader:
    """Random access to a video's frames as ``uint8`` RGB ``(T, H, W, 3)`` arrays."""

    def __init__(self, path: str | os.PathLike, backend: str = "auto"):
        self.path = Path(path)
        if not self.path.is_file():
            raise MediaError(f"{show(self.path)}: no such file")
        if self.path.stat().st_size == 0:
            raise MediaError(f"{show(self.path)}: empty file (0 bytes)")
        if backend == "auto":
            try:
                import decord  # noqa: F401
                backend = "decord"
            except ImportError:
                backend = "pyav"
        self.backend = backend
        try:
            if backend == "decord":
                import decord
                self._vr = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=1)
                self.num_frames = len(self._vr)
                self._info = None        # the frame size costs a decode: read when asked
            elif backend == "pyav":
                self._frames, fps = _pyav_decode_all(self.path)
                if not self._frames:
                    raise MediaError(f"{show(self.path)}: video has no frames")
                self.num_frames = len(self._frames)
                self._info = VideoInfo(len(self._frames), fps, *self._frames[0].shape[1::-1])
            else:
                raise ValueError(f"unknown video backend {backend!r}")
        except MediaError:
            raise
        except Exception as e:  # decoders raise their own exception types
            raise MediaError(f"{show(self.path)}: cannot open video ({type(e).__name__}: {one_line(e)})") from None
        if self.num_frames == 0:
            raise MediaError(f"{show(self.path)}: video has no frames")

    @property
    def info(self) -> VideoInfo:
        """Frame count, fps and frame size. With decord the size needs one decoded frame
        (150 ms at 1080p, 480 ms at 4K): done on first use, not on every open."""
        if self._info is None:
            try:
                first = self._vr[0].shape
            except Exception as e:  # decoders raise their own exception types
                raise MediaError(f"{show(self.path)}: cannot decode its first frame "
                                 f"({type(e).__name__}: {one_line(e)})") from None
            self._info = VideoInfo(self.num_frames, float(self._vr.get_avg_fps()), first[1],
                                   first[0])
        return self._info

    def get_batch(self, indices: list[int]) -> np.ndarray:
        bad = [i for i in indices if not 0 <= i < self.num_frames]
        if bad:
            raise MediaError(f"{show(self.path)}: frame index {bad[0]} out of range "
                             f"(video has {self.num_frames} frames)")
        try:
            if self.backend == "decord":
                return self._vr.get_batch(list(indices)).asnumpy()
            return np.stack([self._frames[i] for i in indices])
        except Exception as e:
            raise MediaError(f"{show(self.path)}: cannot decode frames {indices[:3]}... "
                             f"({type(e).__name__}: {one_line(e)})") from None


def _pyav_decode_all(path: Path) -> tuple[list[np.ndarray], float]:
    """PyAV fallback: decodes the whole video once (fine for the short clips it serves)."""
    import av
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        fps = float(stream.average_rate or 0)
        return [f.to_ndarray(format="rgb24") for f in c.decode(stream)], fps


def sample_frames(num_frames: int, fps: float, *, every: int = 1, target_fps: float | None = None,
                  max_frames: int | None = None, clip_len: int = 1,
                  clip_stride: int | None = None) -> list[list[int]]:
    """Choose frames of a video, deterministically.

    Returns a list of *clips*: each a list of ``clip_len`` consecutive frame indices
    (``clip_len=1`` gives single frames). Clip starts are every ``every``-th frame, or as
    close to ``target_fps`` as the video's ``fps`` allows; ``clip_stride`` (default:
    ``clip_len``) is the minimum distance between clip starts, so clips never overlap by
    default. ``max_frames`` caps the total number of frames, spreading the clips over the
    whole video rather than taking the first ones.
    """
    if every < 1 or clip_len < 1:
        raise ValueError(f"every and clip_len must be >= 1, got every={every}, clip_len={clip_len}")
    step = every
    if target_fps:
        if target_fps <= 0:
            raise ValueError(f"target fps must be positive, got {target_fps}")
        step = max(1, round(fps / target_fps)) if fps > 0 else 1
    step = max(step, clip_stride if clip_stride is not None else clip_len)
    starts = list(range(0, num_frames - clip_len + 1, step))
    if max_frames is not None:
        keep = max(0, max_frames // clip_len)
        if len(starts) > keep:
            if keep == 0:
                starts = []
            else:
                pick = np.linspace(0, len(starts) - 1, keep).round().astype(int)
                starts = [starts[i] for i in sorted(set(pick.tolist()))]
    return [list(range(s, s + clip_len)) for s in starts]


def fit_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``uint8 (N, H, W, 3)`` frames at ``size = (w, h)``: bicubic (Pillow) where they differ.
    The one resize from an original to the cache's stored size, so the RGB the cache stores
    and the RGB read from the originals are the same pixels."""
    w, h = size
    if frames.shape[1:3] == (h, w):
        return frames
    from PIL import Image
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BICUBIC))
                     for f in frames])


def failure_reason(e: BaseException, path: Path) -> str:
    """The reason of a per-file failure, on one line, without the path in front."""
    if isinstance(e, MediaError):
        text = str(e)
        for prefix in (f"{show(path)}: ", f"{path}: "):
            text = text.removeprefix(prefix)
        return one_line(text)
    if isinstance(e, FileNotFoundError):
        return "no such file"
    if isinstance(e, OSError) and e.strerror:
        return one_line(f"{e.strerror} ({type(e).__name__})")
    return one_line(f"{type(e).__name__}: {e}")

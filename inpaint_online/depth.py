"""Monocular depth backends, by name: ``midas`` (MiDaS/DPT), ``import`` (existing maps),
``fallback_lowquality`` (a classical heuristic that needs no weights), ``auto``.

Every backend maps a batch of ``uint8`` RGB frames ``(N, H, W, 3)`` to relative inverse
depth ``(N, h, w)`` float32 in ``[0, 1]`` (1 = near), min-max normalised per frame at the
model's resolution, as iw3 does. Nothing is downloaded: weights and hub code are local
paths, and a missing one fails fast with a message that says what to fetch and where to put it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import one_line
from .fsutil import show
from .media import MediaError

log = logging.getLogger(__name__)

FALLBACK = "fallback_lowquality"
BACKENDS = ("auto", "midas", "import", FALLBACK)

# torch.hub entry points of intel-isl/MiDaS: (weights file, input size, resize method,
# mean, std). The resize rules are MiDaS's own ("upper_bound" / "minimal", multiple of 32).
MIDAS_MODELS = {
    "MiDaS_small": ("midas_v21_small_256.pt", 256, "upper_bound", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "DPT_Hybrid": ("dpt_hybrid_384.pt", 384, "minimal", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "DPT_Large": ("dpt_large_384.pt", 384, "minimal", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
MIDAS_RELEASES = {
    "midas_v21_small_256.pt": "https://github.com/isl-org/MiDaS/releases/download/v2_1/midas_v21_small_256.pt",
    "dpt_hybrid_384.pt": "https://github.com/isl-org/MiDaS/releases/download/v3/dpt_hybrid_384.pt",
    "dpt_large_384.pt": "https://github.com/isl-org/MiDaS/releases/download/v3/dpt_large_384.pt",
}


class DepthSetupError(Exception):
    """A backend cannot be set up (missing weights/code); the message says how to fix it."""


@dataclass
class DepthRequest:
    """What a backend may need to know about the frames besides their pixels."""
    source: Path                      # the media file
    rel: str                          # its path relative to the input root
    frames: list[int] = field(default_factory=lambda: [0])   # frame indices (0 for images)
    size: tuple[int, int] | None = None   # (w, h) the maps will be stored at, if known


def normalise(d: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each ``(N, h, w)`` map to [0, 1]; a constant map becomes 0."""
    n = d.shape[0]
    flat = d.reshape(n, -1)
    lo = flat.amin(1).view(n, 1, 1)
    hi = flat.amax(1).view(n, 1, 1)
    return ((d - lo) / (hi - lo).clamp(min=1e-12)).clamp(0, 1)


def _torch_home() -> Path:
    return Path(torch.hub.get_dir()).parent


def net_size(h: int, w: int, target: int, method: str, multiple: int = 32) -> tuple[int, int]:
    """MiDaS's resize rule: keep the aspect ratio, sides a multiple of 32."""
    sh, sw = target / h, target / w
    if method == "upper_bound":      # fit inside target × target
        s = min(sh, sw)
        rnd = math.floor
    else:                            # "minimal": scale as little as possible
        s = sh if abs(1 - sh) < abs(1 - sw) else sw
        rnd = round
    nh = max(multiple, int(rnd(h * s / multiple)) * multiple)
    nw = max(multiple, int(rnd(w * s / multiple)) * multiple)
    return nh, nw


class DepthBackend:
    name = "base"

    def settings(self) -> dict:
        """Everything that changes the output; recorded in the cache manifest."""
        return {}

    def predict(self, frames: np.ndarray, request: DepthRequest) -> np.ndarray:
        raise NotImplementedError


class MidasBackend(DepthBackend):
    """MiDaS / DPT. ``hub_dir``: a local clone of intel-isl/MiDaS (``source="local"``);
    without one, ``MiDaS_small`` is built natively (:mod:`inpaint_online.midas_small`).
    Weights: ``weights`` or ``$TORCH_HOME/hub/checkpoints/<file>``."""

    name = "midas"

    def __init__(self, model: str = "MiDaS_small", hub_dir: str | None = None,
                 weights: str | None = None, device: str = "cpu", amp: bool = True):
        if model not in MIDAS_MODELS:
            raise DepthSetupError(f"unknown MiDaS model {model!r}; choose from {sorted(MIDAS_MODELS)}")
        self.model_name = model
        wfile, self.size, self.resize, mean, std = MIDAS_MODELS[model]
        self.device = torch.device(device)
        self.amp = amp and self.device.type == "cuda"
        self.weights = Path(weights) if weights else resolve_midas_weights(model)
        self.hub_dir = hub_dir
        if self.weights is None or not self.weights.is_file():
            where = self.weights or (_torch_home() / "hub" / "checkpoints" / wfile)
            raise DepthSetupError(
                f"MiDaS weights for {model} not found at {where}. Download "
                f"{MIDAS_RELEASES[wfile]} and put it there (or pass --weights PATH); "
                "nothing is downloaded at run time.")
        if hub_dir is not None:
            hubconf = Path(hub_dir) / "hubconf.py"
            if not hubconf.is_file():
                raise DepthSetupError(
                    f"--hub-dir {hub_dir} has no hubconf.py: clone the MiDaS code there "
                    "(git clone https://github.com/isl-org/MiDaS DIR) or leave --hub-dir out "
                    "to use the built-in MiDaS_small")
            try:
                net = torch.hub.load(str(hub_dir), model, source="local", pretrained=False,
                                     trust_repo=True)
            except Exception as e:
                raise DepthSetupError(f"{hubconf}: cannot build {model} "
                                      f"({type(e).__name__}: {e})") from None
            state = torch.load(self.weights, map_location="cpu", weights_only=True)
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise DepthSetupError(f"{self.weights}: weights do not fit {model} from "
                                      f"{hub_dir} ({str(e).splitlines()[0]})") from None
        elif model == "MiDaS_small":
            from .midas_small import load_midas_small
            try:
                net = load_midas_small(str(self.weights))
            except ValueError as e:
                raise DepthSetupError(str(e)) from None
        else:
            raise DepthSetupError(
                f"{model} needs the MiDaS hub code: clone https://github.com/isl-org/MiDaS "
                "and pass --hub-dir DIR (MiDaS_small alone is built in)")
        self.net = net.eval().to(self.device)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    def settings(self) -> dict:
        return {"model": self.model_name, "weights": self.weights.name,
                "weights_size": self.weights.stat().st_size, "hub": bool(self.hub_dir),
                "size": self.size}

    @torch.inference_mode()
    def predict(self, frames: np.ndarray, request: DepthRequest) -> np.ndarray:
        x = _frames_to_tensor(frames, self.device)
        h, w = x.shape[-2:]
        x = F.interpolate(x, net_size(h, w, self.size, self.resize), mode="bicubic",
                          align_corners=False, antialias=True).clamp(0, 1)
        x = (x - self.mean) / self.std
        with torch.autocast(self.device.type, enabled=self.amp):
            d = self.net(x)
        if d.dim() == 4:
            d = d[:, 0]
        return normalise(d.float()).cpu().numpy()


def resolve_midas_weights(model: str) -> Path | None:
    """``$TORCH_HOME/hub/checkpoints/<official file name>`` if it exists."""
    p = _torch_home() / "hub" / "checkpoints" / MIDAS_MODELS[model][0]
    return p if p.is_file() else None


class ImportBackend(DepthBackend):
    """Depth or disparity maps that already exist, in a folder mirroring the inputs:
    ``DIR/<rel path without extension>.{png,npy,pfm}`` for images and
    ``DIR/<rel path without extension>/<frame:06d>.{png,npy,pfm}`` for video frames.
    ``kind="depth"`` maps (larger = farther) are inverted; ``"disparity"`` maps are used as
    they are. Non-finite and non-positive depth counts as far."""

    name = "import"
    EXTS = (".npy", ".png", ".pfm")

    def __init__(self, root: str, kind: str = "disparity"):
        if kind not in ("depth", "disparity"):
            raise DepthSetupError(f"import kind must be 'depth' or 'disparity', got {kind!r}")
        self.root, self.kind = Path(root), kind
        if not self.root.is_dir():
            raise DepthSetupError(f"--import-dir {root}: no such directory")

    def settings(self) -> dict:
        return {"root": str(self.root.resolve()), "kind": self.kind}

    def _path(self, request: DepthRequest, frame: int, video: bool) -> Path:
        stem = Path(request.rel).with_suffix("")
        base = self.root / stem / f"{frame:06d}" if video else self.root / stem
        for ext in self.EXTS:
            p = base.with_name(base.name + ext)
            if p.is_file():
                return p
        raise MediaError(f"{request.source}: no imported depth map at {base}.{{npy,png,pfm}}")

    def predict(self, frames: np.ndarray, request: DepthRequest) -> np.ndarray:
        from .media import media_kind
        video = media_kind(request.source) == "video"
        out = []
        for frame in request.frames:
            p = self._path(request, frame, video)
            m = read_map(p).astype(np.float64)
            if m.shape != frames.shape[1:3]:
                raise MediaError(f"{show(p)}: map is {m.shape[1]}x{m.shape[0]} but the image is "
                                 f"{frames.shape[2]}x{frames.shape[1]}")
            try:
                out.append(torch.from_numpy(to_inverse_depth(m, self.kind)))
            except ValueError as e:
                raise MediaError(f"{show(p)}: {e}") from None
        return normalise(torch.stack(out)).numpy()


def to_inverse_depth(m: np.ndarray, kind: str) -> np.ndarray:
    """A raw map as float32 inverse depth (larger = nearer), not yet normalised.

    ``kind="depth"`` (larger = farther) is inverted; ``"disparity"`` is used as it is.
    Non-finite values (and non-positive depth) count as the farthest value present; a map
    with no usable value at all is a ValueError."""
    m = np.asarray(m, dtype=np.float64)
    usable = np.isfinite(m) & (m > 0) if kind == "depth" else np.isfinite(m)
    if kind in ("depth", "disparity") and not usable.any():
        raise ValueError("the map has no usable value (all NaN/inf"
                         f"{' or <= 0' if kind == 'depth' else ''})")
    if kind == "depth":
        ok = np.isfinite(m) & (m > 0)
        inv = np.where(ok, 1.0 / np.where(ok, m, 1.0), np.nan)
        m = np.where(ok, inv, np.nanmin(inv) if ok.any() else 0.0)
    elif kind == "disparity":
        fin = np.isfinite(m)
        m = np.where(fin, m, np.nanmin(np.where(fin, m, np.nan)) if fin.any() else 0.0)
    else:
        raise ValueError(f"kind must be 'depth' or 'disparity', got {kind!r}")
    return m.astype(np.float32)


def read_map(path: Path) -> np.ndarray:
    """A single-channel map from ``.npy``, 8/16-bit ``.png`` or ``.pfm``."""
    try:
        if path.suffix == ".npy":
            m = np.load(path)
        elif path.suffix == ".pfm":
            m = _read_pfm(path)
        else:
            from PIL import Image
            with Image.open(path) as im:
                m = np.asarray(im)
    except Exception as e:
        raise MediaError(f"{show(path)}: cannot read map ({type(e).__name__}: {one_line(e)})") from None
    if m.ndim == 3:
        m = m[..., 0]
    if m.ndim != 2:
        raise MediaError(f"{show(path)}: expected a single-channel 2-D map, got shape {m.shape}")
    return m


def _read_pfm(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        header = f.readline().strip()
        if header not in (b"Pf", b"PF"):
            raise ValueError("not a PFM file")
        w, h = map(int, f.readline().split())
        scale = float(f.readline().strip())
        data = np.fromfile(f, dtype="<f4" if scale < 0 else ">f4")
    ch = 3 if header == b"PF" else 1
    data = data[: w * h * ch].reshape(h, w, ch)[..., 0]
    return np.flipud(data).astype(np.float32)   # PFM rows go bottom-up


class FallbackBackend(DepthBackend):
    """LOW QUALITY classical heuristic, for running the pipeline without any weights.

    Near = low in the frame and textured (a ground-plane prior plus a sharpness cue), snapped
    to image edges with a guided filter so that depth steps follow object outlines. It is
    not a depth estimator: use it for demos and tests, never for a real dataset.

    The smooth map is made at ``size`` px (long side); its layers are cut at the size the
    map will be stored at (``request.size``, else the frame's): a step between layers is then
    as sharp as an object boundary, not a ramp of several pixels from upsampling a small map —
    soft ramps fold into holes only under large shifts, so at iw3's level 1 a 640-px demo
    frame had almost none (docs/benchmarks.md, export).
    """

    name = FALLBACK

    def __init__(self, device: str = "cpu", size: int = 256):
        self.device = torch.device(device)
        self.size = size

    def settings(self) -> dict:
        return {"size": self.size, "version": 4}

    @torch.inference_mode()
    def predict(self, frames: np.ndarray, request: DepthRequest) -> np.ndarray:
        x = _frames_to_tensor(frames, self.device)
        h, w = x.shape[-2:]
        s = self.size / max(h, w)
        x = F.interpolate(x, (max(8, round(h * s)), max(8, round(w * s))), mode="bilinear",
                          antialias=True, align_corners=False)
        gray = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        n, _, gh, gw = gray.shape
        ground = torch.linspace(0, 1, gh, device=x.device).view(1, 1, gh, 1).expand(n, 1, gh, gw)
        gy, gx = torch.gradient(gray, dim=(2, 3))
        sharp = _box(torch.sqrt(gx ** 2 + gy ** 2), 7)
        q = torch.quantile(sharp.reshape(n, -1), 0.99, dim=1).view(n, 1, 1, 1).clamp(min=1e-6)
        d = 0.65 * ground + 0.35 * (sharp / q).clamp(0, 1)
        d = normalise(_guided_filter(gray, _box(d, 9), r=6, eps=1e-3)[:, 0])[:, None]
        # a few depth layers with hard steps, cut at the output size: a smooth map folds
        # nowhere, so it would have no disocclusions at all (holes need shift jumps over ~1 px)
        ow, oh = request.size if request.size else (w, h)
        d = F.interpolate(d, (oh, ow), mode="bilinear", align_corners=False)
        d = 0.75 * torch.round(d * 4) / 4 + 0.25 * d
        return normalise(d[:, 0]).cpu().numpy()


def _frames_to_tensor(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 → ``(N, 3, H, W)`` float in [0, 1] on ``device``."""
    if not frames.flags.writeable:
        frames = frames.copy()
    return torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float() / 255


def _box(x: torch.Tensor, k: int) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1)


def _guided_filter(guide: torch.Tensor, src: torch.Tensor, r: int, eps: float) -> torch.Tensor:
    """He et al.'s guided filter: edge-aware smoothing of ``src`` along ``guide``'s edges."""
    k = 2 * r + 1
    mg, ms = _box(guide, k), _box(src, k)
    cov = _box(guide * src, k) - mg * ms
    var = _box(guide * guide, k) - mg * mg
    a = cov / (var + eps)
    b = ms - a * mg
    return _box(a, k) * guide + _box(b, k)


def make_backend(name: str, *, device: str = "cpu", model: str = "MiDaS_small",
                 hub_dir: str | None = None, weights: str | None = None,
                 import_dir: str | None = None, import_kind: str = "disparity",
                 amp: bool = True) -> DepthBackend:
    """Build a backend by name. ``auto``: ``midas`` when its weights are available locally,
    else the low-quality fallback, with a warning."""
    if name == "auto":
        have = weights is not None or resolve_midas_weights(model) is not None
        if have and (model == "MiDaS_small" or hub_dir):
            name = "midas"
        else:
            log.warning("auto: no local MiDaS weights for %s (looked in %s); using the "
                        "LOW-QUALITY '%s' backend. Put %s there or pass --weights for real "
                        "depth.", model, _torch_home() / "hub" / "checkpoints", FALLBACK,
                        MIDAS_MODELS.get(model, ("?",))[0])
            name = FALLBACK
    if name == "midas":
        return MidasBackend(model, hub_dir=hub_dir, weights=weights, device=device, amp=amp)
    if name == "import":
        if not import_dir:
            raise DepthSetupError("the import backend needs --import-dir DIR")
        return ImportBackend(import_dir, import_kind)
    if name == FALLBACK:
        log.warning("depth backend '%s' is a LOW-QUALITY heuristic (no model): fine for "
                    "demos and tests, not for training data", FALLBACK)
        return FallbackBackend(device=device)
    raise DepthSetupError(f"unknown depth backend {name!r}; choose from {BACKENDS}")

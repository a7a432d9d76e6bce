"""Using a trained checkpoint: fill holes in an image, render a stereo pair.

Orientation (iw3's convention, the one the model was trained in): the background lies to
the *right* of each hole. That is how the holes of a right view look; left views (and
masks of ``view="left"``) are mirrored in and out.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from .depth import read_map, to_inverse_depth
from .errors import show
from .iw3net import NunifFileError, is_nunif_model_file, load_nunif_model
from .media import MediaError
from .models import ModelConfig, background_pushpull_fill, build_model, composite
from .stream import orientation_depth
from .warp import close_mask, forward_warp

log = logging.getLogger(__name__)

__all__ = ["load_model", "inpaint", "FILLS", "choose_fill", "load_fill", "fill_holes", "background_fill",
           "validation_scores", "render_stereo", "split_border_band", "needs_depth",
           "image_to_tensor", "tensor_to_image", "load_depth_file"]


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu",
               data=None) -> torch.nn.Module:
    """The model of a training checkpoint or of a nunif model file (iw3's format, written by
    ``python -m inpaint_online.export_model``), ``weights_only`` load, in eval mode.
    ``data``: the file's contents when the caller has read them (:func:`read_checkpoint`)."""
    data = read_checkpoint(checkpoint, map_location="cpu") if data is None else data
    if is_nunif_model_file(data):
        try:
            model, _ = load_nunif_model(checkpoint, data)
        except NunifFileError as e:
            raise CheckpointError(str(e)) from None
        return model.to(device).eval()
    ck = load_checkpoint(checkpoint, data=data)
    raw = ck.get("model_config")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{checkpoint}: the checkpoint has no model config")
    known = set(ModelConfig.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise CheckpointError(f"{checkpoint}: model config has keys this version does not know: "
                              f"{unknown} (made by a newer inpaint_online?)")
    try:
        cfg = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
        model = build_model(cfg)
        model.load_state_dict(ck["model"])
    except (ValueError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"{checkpoint}: weights do not fit the model config "
                              f"({str(e).splitlines()[0][:300]})") from None
    return model.to(device).eval()


def load_depth_file(path: Path, kind: str, shape: tuple[int, int]) -> np.ndarray:
    """A depth/disparity map file as inverse depth in [0, 1] at ``shape`` (resized if needed).
    Non-finite values count as the farthest (a warning says how many); a map without any
    usable value is a :class:`MediaError`."""
    raw = read_map(path)
    bad = int((~np.isfinite(raw)).sum()) if raw.dtype.kind == "f" else 0
    try:
        d = to_inverse_depth(raw, kind)
    except ValueError as e:
        raise MediaError(f"{show(path)}: {e}") from None
    if bad:
        log.warning("%s: %d of %d depth values are not finite (NaN/inf); they were treated as "
                    "the farthest depth", show(path), bad, raw.size)
    if d.shape != shape:   # maps at model resolution are common: resize to the image
        d = F.interpolate(torch.from_numpy(d)[None, None], shape, mode="bilinear",
                          align_corners=False)[0, 0].numpy()
    lo, hi = float(d.min()), float(d.max())
    if hi <= lo:
        log.warning("%s: the depth map is constant: there is no parallax, both views will "
                    "equal the image", show(path))
    return (d - lo) / max(hi - lo, 1e-12)


def image_to_tensor(rgb: np.ndarray, device="cpu") -> torch.Tensor:
    """``uint8 (H, W, 3)`` → ``(1, 3, H, W)`` float in [0, 1]."""
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].to(device).float() / 255


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """``(1|3, H, W)`` or ``(1, C, H, W)`` in [0, 1] → ``uint8 (H, W, 3)`` (gray expanded)."""
    t = t.detach().float().cpu()
    if t.dim() == 4:
        t = t[0]
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _starts(n: int, tile: int, overlap: int) -> list[int]:
    if n <= tile:
        return [0]
    step = tile - overlap
    return list(range(0, n - tile, step)) + [n - tile]


def _ramp(n: int, overlap: int, device) -> torch.Tensor:
    r = torch.ones(n, device=device)
    k = min(overlap, n // 2)
    if k > 0:
        up = torch.arange(1, k + 1, device=device, dtype=torch.float32) / (k + 1)
        r[:k], r[-k:] = up, up.flip(0)
    return r


@torch.no_grad()
def inpaint(model: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor,
            depth: torch.Tensor | None = None, *, view: str = "right", tile: int = 1024,
            overlap: int = 64, progress: str | None = None) -> torch.Tensor:
    """Fill the holes of ``x`` ``(B, 3, H, W)`` where ``mask`` ``(B, 1, H, W)`` is 1 (or of
    clips ``(B, T, 3, H, W)`` with a temporal model).

    Any size: images larger than ``tile`` are processed in overlapping tiles blended with
    linear ramps (bounded memory; the model pads each tile itself). Returns the composite:
    known pixels unchanged, holes from the model. ``progress``: a progress bar with this
    title over the tiles (shown when there are several).
    """
    if view not in ("left", "right"):
        raise ValueError(f"view must be 'left' or 'right', got {view!r}")
    mask = (mask > 0).to(x.dtype)
    x = x * (1 - mask)
    if needs_depth(model) and depth is None:
        raise ValueError("this model reads depth (model.use_depth or model.prefill=background/dual): "
                         "pass a depth map")
    d = depth * (1 - mask) if depth is not None else None
    if view == "left":
        x, mask = x.flip(-1), mask.flip(-1)
        d = d.flip(-1) if d is not None else None
    h, w = x.shape[-2:]
    pred = torch.zeros_like(x)
    weight = torch.zeros(h, w, device=x.device)
    corners = [(y0, x0) for y0 in _starts(h, tile, overlap) for x0 in _starts(w, tile, overlap)]
    for y0, x0 in tqdm(corners, desc=progress, unit="tile", leave=False, dynamic_ncols=True,
                       disable=progress is None or len(corners) < 2):
        sl = (..., slice(y0, y0 + tile), slice(x0, x0 + tile))
        p = model(x[sl], mask[sl], d[sl] if d is not None else None).float()
        wt = _ramp(p.shape[-2], overlap, x.device)[:, None] * _ramp(p.shape[-1], overlap, x.device)[None]
        pred[sl] += p * wt
        weight[sl] += wt
    out = composite(x, mask, (pred / weight).clamp(0, 1))
    return out.flip(-1) if view == "left" else out


FILLS = ("auto", "model", "background")
BACKGROUND = "background push-pull"     # the classical fill --fill background runs


def background_fill(x: torch.Tensor, mask: torch.Tensor, depth: torch.Tensor | None = None,
                    *, view: str = "right") -> torch.Tensor:
    """The background-side push-pull fill (the best classical fill on real disocclusions) of
    images ``(B, 3, H, W)`` or clips ``(B, T, 3, H, W)``, known pixels unchanged. Without
    ``depth`` the view's orientation says where the background is: right of every hole in
    a right view, left in a left view."""
    shape = x.shape
    if x.dim() == 5:
        x, mask = x.flatten(0, 1), mask.flatten(0, 1)
        depth = depth.flatten(0, 1) if depth is not None else None
    m = (mask > 0).to(x.dtype)
    if depth is None:
        depth = orientation_depth(x.shape[0], *x.shape[-2:], x.device)
        depth = depth.flip(-1) if view == "left" else depth
    out = composite(x, m, background_pushpull_fill(x * (1 - m), m, depth * (1 - m)))
    return out.view(shape)


def validation_scores(data: dict) -> dict | None:
    """What the run's validation measured for the weights of checkpoint contents ``data``:
    ``{"metric", "model", "background"}`` (the same samples; with ``data.val_layered`` also
    ``layered_model`` and ``layered_background``, the layered set's), or None when the file
    does not say (a nunif model file, a checkpoint of a step that was not validated, or one
    made before checkpoints kept the classical scores)."""
    best = data.get("best") if isinstance(data, dict) else None
    if not isinstance(best, dict):
        return None
    v = _score_of(best, data)
    bg = (best.get("classical_scores") or {}).get(BACKGROUND)
    if bg is None or v is None:
        return None
    out = {"metric": best.get("metric") or "psnr_hole", "model": float(v), "background": float(bg)}
    lay = best.get("layered")
    if isinstance(lay, dict):
        vl = _score_of(lay, data, best)
        bgl = (lay.get("classical_scores") or {}).get(BACKGROUND)
        if vl is not None and bgl is not None:
            out.update(layered_model=float(vl), layered_background=float(bgl))
    return out


def _score_of(rec: dict, data: dict, best: dict | None = None) -> float | None:
    """The score ``rec`` (a validation set's record) holds for the checkpoint's weights: the
    best step's, the EMA's, or the latest validated step's."""
    best = best if best is not None else rec
    step = data.get("step")
    if data.get("weights") == "ema":
        return rec.get("ema_value") if best.get("ema_step") == step else None
    if best.get("step") == step:
        return rec.get("value")
    latest = rec.get("latest") or {}
    return latest.get("value") if latest.get("step") == step else None


def choose_fill(fill: str, data: dict | None) -> tuple[str, str]:
    """``("model" | "background", the line that says why)`` for ``--fill fill``: ``auto`` takes
    whichever the checkpoint's validation scored higher on the same held-out samples (with a
    layered validation set too, the model only where it scored higher on both)."""
    if fill not in FILLS:
        raise ValueError(f"--fill must be one of {', '.join(FILLS)}, got {fill!r}")
    if fill != "auto":
        return fill, f"fill: {fill} (--fill {fill})"
    s = validation_scores(data) if data is not None else None
    if s is None:
        return "model", ("fill: model (--fill auto: the checkpoint carries no validation score "
                         "of the background fill to compare with; --fill background uses it)")
    unit = " dB" if s["metric"].startswith("psnr") else ""
    wins = s["model"] >= s["background"]
    said = (f"on the run's held-out samples the model scored {s['metric']} "
            f"{s['model']:.2f}{unit}, the background push-pull fill {s['background']:.2f}{unit}")
    if "layered_model" in s:
        wins = wins and s["layered_model"] >= s["layered_background"]
        said += (f"; on its layered samples {s['layered_model']:.2f}{unit} and "
                 f"{s['layered_background']:.2f}{unit}")
    kind = "model" if wins else "background"
    return kind, f"fill: {kind} (--fill auto: {said})"


def load_fill(checkpoint: str | None, fill: str, device, tool: str):
    """``(model or None, "model" | "background")`` for a tool's ``--checkpoint`` and
    ``--fill``, the file read once; prints the line that says which fill runs and why."""
    if not checkpoint:
        if fill != "background":
            raise ValueError("--checkpoint is required (or --fill background: no model)")
        kind, line = choose_fill("background", None)
        print(f"{tool}: {line}")
        return None, kind
    data = read_checkpoint(checkpoint, map_location="cpu")
    kind, line = choose_fill(fill, data)
    print(f"{tool}: {line}")
    return (load_model(checkpoint, device, data=data) if kind == "model" else None), kind


def fill_holes(model: torch.nn.Module | None, fill: str, x: torch.Tensor, mask: torch.Tensor,
               depth: torch.Tensor | None = None, *, view: str = "right",
               tile: int = 1024, progress: str | None = None) -> torch.Tensor:
    """:func:`inpaint` with ``model`` (``fill="model"``) or :func:`background_fill`
    (``fill="background"``)."""
    if fill == "background":
        return background_fill(x, mask, depth, view=view)
    return inpaint(model, x, mask, depth, view=view, tile=tile, progress=progress)


def needs_depth(model: torch.nn.Module) -> bool:
    """Whether ``model`` reads depth: as an input (``model.use_depth``) or for its first
    guess (``model.prefill=background`` or ``dual``)."""
    c = getattr(model, "config", None)
    return bool(getattr(c, "use_depth", False)) or getattr(c, "prefill", None) in ("background", "dual")


def render_stereo(model: torch.nn.Module | None, image: torch.Tensor, depth: torch.Tensor,
                  divergence: float, convergence: float, *, mode: str = "bilinear",
                  closing: tuple[int, int] | None = (5, 5), tile: int = 1024,
                  clip: bool = False, fill: str = "model", progress: bool = False) -> dict:
    """Left and right views of ``image`` ``(N, 3, H, W)`` by ``depth`` ``(N, 1, H, W)``
    (inverse depth in [0, 1]), disocclusions filled by ``model`` (``fill="background"``: by
    the background push-pull fill, no model needed). ``clip=True``: the N images are
    consecutive frames and the model sees them as one clip (temporal model).

    Returns ``left``, ``right``, ``sbs`` (left | right), the hole masks ``left_hole``,
    ``right_hole`` (after the same closing the training masks get) and the views before
    the fill, ``left_warped``, ``right_warped``.
    """
    out = {}
    for view in ("left", "right"):
        warped, hole = forward_warp(image, depth, divergence, convergence, view, mode=mode)
        wdepth, _ = forward_warp(depth, depth, divergence, convergence, view, mode=mode,
                                 fill="background")
        if closing is not None and tuple(closing) != (0, 0):
            hole = close_mask(hole, tuple(closing))
        bar = f"fill the {view} view" if progress else None
        if clip:
            out[view] = fill_holes(model, fill, warped[None], hole.float()[None], wdepth[None],
                                   view=view, tile=tile, progress=bar)[0]
        else:
            out[view] = fill_holes(model, fill, warped, hole.float(), wdepth, view=view, tile=tile,
                                   progress=bar)
        out[f"{view}_hole"], out[f"{view}_warped"] = hole, warped
    out["sbs"] = torch.cat([out["left"], out["right"]], dim=-1)
    return out


def split_border_band(hole: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(interior, band)`` of a bool hole mask ``(..., H, W)``: ``band`` is the part of each
    row's holes that touches the left or right image border (the strip a shifted view
    uncovers at the frame's edge: no disocclusion, nothing behind it was ever seen);
    ``interior`` the rest — the disocclusions behind foreground edges."""
    h = hole.to(torch.int32)
    band = (h.cumprod(-1) | h.flip(-1).cumprod(-1).flip(-1)).bool()
    return hole & ~band, band

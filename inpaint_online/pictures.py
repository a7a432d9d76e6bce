"""Pictures a person can read: labelled contact sheets of samples, holes as a coloured
overlay, an amplified error column and a zoom on the largest hole.

Every sheet has column titles and a label per row (source, view, parameters); images are in
the orientation the model sees (right view: background right of each hole) and the row label
says when a left view was mirrored. Used by the TensorBoard grids and ``preview``.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = ["sheet", "hole_overlay", "error_tile", "zoom_on_holes", "fit_width", "with_legend", "to_uint8", "depth_picture",
           "sample_label", "save_sheet"]

HOLE = np.array([255, 0, 255], np.float32)      # magenta: rare in photos, visible on dark content
TITLE_H = 14


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """``(1|3, H, W)`` in [0, 1] → ``uint8 (H, W, 3)``."""
    t = t.detach().float().cpu().clamp(0, 1)
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return (t * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


# a dark-to-bright ramp for depth (black-purple-orange-yellow), 5 anchors
_RAMP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]],
                 np.float32)


def depth_picture(depth) -> np.ndarray:
    """Inverse depth in [0, 1] ``(H, W)`` (array or tensor) → ``uint8 (H, W, 3)``: near is
    bright."""
    d = (depth.detach().float().cpu().numpy() if isinstance(depth, torch.Tensor)
         else np.asarray(depth, np.float32))
    t = np.clip(d, 0, 1) * (len(_RAMP) - 1)
    i = np.clip(np.floor(t).astype(int), 0, len(_RAMP) - 2)
    f = (t - i)[..., None]
    return np.clip(_RAMP[i] * (1 - f) + _RAMP[i + 1] * f + 0.5, 0, 255).astype(np.uint8)


def hole_overlay(image: np.ndarray, hole: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """The image with its holes tinted magenta (not painted black: dark content stays readable)."""
    out = image.astype(np.float32)
    out[hole] = (1 - alpha) * out[hole] + alpha * HOLE
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def error_tile(pred: np.ndarray, target: np.ndarray, gain: float = 4.0) -> np.ndarray:
    """``|pred − target|`` per pixel, amplified ``gain`` times, as gray: at thumbnail size a
    prediction and its target look alike; their difference does not."""
    e = np.abs(pred.astype(np.float32) - target.astype(np.float32)).mean(-1) * gain
    e = np.clip(e + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(e[..., None], 3, -1)


def zoom_on_holes(tiles: list[np.ndarray], hole: np.ndarray, factor: int = 4,
                  side: int | None = None) -> list[np.ndarray]:
    """The same window of every tile where the holes are densest, enlarged ``factor`` times
    (nearest). The window (``side`` px, default a ``1/factor`` of the short side) is found by
    an integral image and then centred on the holes it holds, so they sit in the middle of
    the zoom, not at its edge."""
    h, w = hole.shape
    s = max(4, min(h, w, side or min(h, w) // factor))
    ii = np.pad(hole.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = ii[s:, s:] - ii[:-s, s:] - ii[s:, :-s] + ii[:-s, :-s]
    y, x = np.unravel_index(int(sums.argmax()), sums.shape)
    ys, xs = np.nonzero(hole[y:y + s, x:x + s])
    if len(ys):                              # centre on the holes' middle, inside the frame
        y = int(np.clip(y + (ys.min() + ys.max()) // 2 - s // 2, 0, h - s))
        x = int(np.clip(x + (xs.min() + xs.max()) // 2 - s // 2, 0, w - s))
    zooms = [np.kron(t[y:y + s, x:x + s], np.ones((factor, factor, 1), np.uint8)) for t in tiles]
    return zooms if side else [z[:h, :w] for z in zooms]


def fit_width(img: np.ndarray, max_width: int) -> np.ndarray:
    """``img`` scaled down (area filter) to at most ``max_width`` px wide."""
    if img.shape[1] <= max_width:
        return img
    f = max_width / img.shape[1]
    size = (max_width, max(1, round(img.shape[0] * f)))
    return np.asarray(Image.fromarray(img).resize(size, Image.BOX))


def sample_label(name: str, rec: dict | None, hole: np.ndarray, *extra: str) -> str:
    """A row label: source, view (a left view is shown mirrored, as the model sees it),
    divergence and convergence (``rec`` None: a fixed dataset's sample, none drawn), hole
    share, then ``extra`` parts (empty ones dropped)."""
    warp = ()
    if rec is not None:
        warp = ("left view (mirrored)" if rec["view"] == "left" else "right view",
                f"div {rec['divergence']:.1f}% conv {rec['convergence']:.2f}")
    return ", ".join(v for v in (name, *extra[:1], *warp,
                                 f"holes {100 * hole.mean():.1f}%", *extra[1:]) if v)


def with_legend(img: np.ndarray, text: str, depth_scale: bool = False) -> np.ndarray:
    """``img`` with a white strip under it that says what it shows (``text``); with
    ``depth_scale`` also the colour scale of :func:`depth_picture`, far to near."""
    h, w = img.shape[:2]
    bar_w = min(200, w // 3) if depth_scale else 0
    out = Image.new("RGB", (w, h + TITLE_H + 4), (255, 255, 255))
    out.paste(Image.fromarray(np.ascontiguousarray(img)), (0, 0))
    draw = ImageDraw.Draw(out)
    draw.text((2, h + 2), text, fill=(0, 0, 0))
    if bar_w >= 40:
        ramp = depth_picture(np.tile(np.linspace(0, 1, bar_w - 56, dtype=np.float32), (TITLE_H - 4, 1)))
        x0 = w - bar_w
        draw.text((x0, h + 2), "far", fill=(0, 0, 0))
        out.paste(Image.fromarray(ramp), (x0 + 22, h + 4))
        draw.text((w - 30, h + 2), "near", fill=(0, 0, 0))
    return np.asarray(out)


def save_sheet(path, rows: list[tuple[str, list[np.ndarray]]], columns: list[str]) -> None:
    """:func:`sheet` written atomically as a PNG (the output is checked first)."""
    from .fsutil import save_image
    save_image(path, sheet(rows, columns))


def sheet(rows: list[tuple[str, list[np.ndarray]]], columns: list[str], pad: int = 2) -> np.ndarray:
    """A white-spaced grid: column titles on top, each row ``(label, tiles)`` with its label
    above it. Tiles of one column share a size. Returns ``uint8 (H, W, 3)``."""
    widths = [max(r[1][j].shape[1] for r in rows) for j in range(len(columns))]
    heights = [max(t.shape[0] for t in r[1]) for r in rows]
    total_w = sum(widths) + pad * (len(widths) + 1)
    total_h = TITLE_H + sum(heights) + len(rows) * (TITLE_H + pad) + pad
    img = Image.new("RGB", (total_w, total_h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    x = pad
    for title, w in zip(columns, widths):
        draw.text((x + 2, 1), title, fill=(0, 0, 0))
        x += w + pad
    y = TITLE_H
    for (label, tiles), h in zip(rows, heights):
        draw.text((pad + 2, y + 1), label, fill=(40, 40, 40))
        y += TITLE_H
        x = pad
        for t, w in zip(tiles, widths):
            img.paste(Image.fromarray(t), (x, y))
            x += w + pad
        y += h + pad
    return np.asarray(img)

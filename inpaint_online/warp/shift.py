"""What every warp stage shares: depth checks, per-sample parameters, the view's sign and the
disparity shift (docs/design.md, "warp").

Conventions, stated once for the package:

* ``depth`` is ``(B, 1, H, W)`` float *relative inverse depth* in ``[0, 1]``: larger = nearer.
* Per-eye horizontal shift in pixels (iw3's meaning of divergence / convergence)::

      s(x) = (d(x) - convergence) * divergence / 100 * width / 2

  where ``width`` is the width of the *full frame* (defaults to the tensor's width; pass the
  frame width when warping a crop). :data:`SHIFT_PER_PERCENT` is that ``1/100 * 1/2``.
* The **left** view sees content shifted by ``+s``, the **right** view by ``-s``.  A view is
  given as ``"left"`` / ``"right"``, a sequence of those (one per sample), or a bool tensor
  ``(B,)`` with ``True`` meaning left.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["Param", "View", "SHIFT_PER_PERCENT", "check_depth", "per_sample", "view_sign",
           "disparity_shift", "iw3_shift_scale"]

Param = float | torch.Tensor
View = str | Sequence[str] | torch.Tensor

# Per-eye shift in pixels per % of divergence per pixel of frame width: divergence is in %
# (1/100) of the width and each eye takes half of it (1/2). The one home of this factor.
SHIFT_PER_PERCENT = 0.005

def check_depth(depth: torch.Tensor, check: bool, name: str = "depth") -> torch.Tensor:
    if not isinstance(depth, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(depth).__name__}")
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f"{name} must have shape (B, 1, H, W). Got {tuple(depth.shape)}")
    if not depth.is_floating_point():
        raise ValueError(
            f"{name} must be a floating point tensor with values in [0, 1] (larger = nearer). "
            f"Got dtype {depth.dtype}; convert integer maps first, e.g. depth.float() / 65535")
    if depth.shape[2] == 0 or depth.shape[3] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(depth.shape)}")
    depth = depth.float()
    if check:
        # One fused reduction, one host sync: the price of a clear message.
        finite = torch.isfinite(depth)
        stats = torch.stack([(~finite).sum().float(),
                             torch.where(finite, depth, 0.5).amin(),
                             torch.where(finite, depth, 0.5).amax()]).tolist()
        if stats[0] > 0:
            raise ValueError(f"{name} contains {int(stats[0])} NaN/inf values; "
                             "fill or drop them before warping")
        if stats[1] < 0.0 or stats[2] > 1.0:
            raise ValueError(f"{name} must be normalised to [0, 1]; got values in "
                             f"[{stats[1]:.4g}, {stats[2]:.4g}]")
        return depth
    # check=False: documented normalisation instead of an error (no host sync).
    return torch.nan_to_num(depth, nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)


def per_sample(value: Param, batch: int, device: torch.device, name: str) -> torch.Tensor:
    """A scalar or ``(B,)`` parameter as a float tensor shaped ``(B, 1, 1, 1)``."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            value = value.expand(batch)
        if value.dim() != 1 or value.shape[0] != batch:
            raise ValueError(f"{name} must be a float or a tensor of shape ({batch},); "
                             f"got shape {tuple(value.shape)}")
        return value.to(device=device, dtype=torch.float32).view(batch, 1, 1, 1)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a float or a (B,) tensor, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return torch.full((batch, 1, 1, 1), value, dtype=torch.float32, device=device)


def view_sign(view: View, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Direction of the shift per sample, ``(B, 1, 1, 1)`` float: +1 left view, -1 right."""
    if isinstance(view, str):
        view = [view] * batch
    if isinstance(view, torch.Tensor):
        if view.dtype != torch.bool or view.shape != (batch,):
            raise ValueError(f"view as a tensor must be bool of shape ({batch},) "
                             f"(True = left); got {view.dtype} {tuple(view.shape)}")
        left = view.to(device)
    else:
        view = list(view)
        bad = [v for v in view if v not in ("left", "right")]
        if bad or len(view) != batch:
            raise ValueError(f"view must be 'left', 'right' or {batch} of those; got {view!r}")
        left = torch.tensor([v == "left" for v in view], device=device)
    return torch.where(left, 1.0, -1.0).view(batch, 1, 1, 1).float()


def disparity_shift(depth: torch.Tensor, divergence: Param, convergence: Param,
                    width: Param | None = None, max_shift: float | None = None) -> torch.Tensor:
    """Per-eye shift magnitude ``s = (d - convergence) * divergence/100 * width/2`` in pixels.

    ``depth`` is ``(B, 1, H, W)``; the parameters are floats or ``(B,)`` tensors. ``width``
    is the full frame's width (default: ``W``). With ``max_shift`` the shift is clamped to
    ``±max_shift`` pixels. Positive ``s`` (content nearer than the screen plane) moves right
    in the left view and left in the right view.
    """
    batch, _, _, w = depth.shape
    dev = depth.device
    div = per_sample(divergence, batch, dev, "divergence")
    conv = per_sample(convergence, batch, dev, "convergence")
    wid = per_sample(w if width is None else width, batch, dev, "width")
    s = (depth - conv) * (div * wid * SHIFT_PER_PERCENT)
    if max_shift is not None:
        s = s.clamp(-max_shift, max_shift)
    return s


def iw3_shift_scale(divergence: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """iw3's ``k = divergence * 0.01 * width * 0.5`` in its own order of operations (the
    same value as ``divergence * SHIFT_PER_PERCENT * width`` up to rounding): the iw3 mask
    method and its per-pixel reference reproduce iw3's floats bit for bit with it."""
    return divergence * 0.01 * width * 0.5

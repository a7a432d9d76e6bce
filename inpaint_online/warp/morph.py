"""Morphological closing of hole masks, as iw3 closes its masks (docs/design.md, "warp")."""

from __future__ import annotations

import torch

__all__ = ["close_mask"]


def close_mask(mask: torch.Tensor, kernel: int | tuple[int, int] = (5, 5)) -> torch.Tensor:
    """Morphological closing of a bool mask: ``clamp(close(M) + M, 0, 1)`` as in iw3.

    ``close`` is a dilation then an erosion with a ``(kh, kw)`` rectangle (odd sizes), both
    max-pool based; pixels outside the image are ignored (no border effects). iw3's two
    3×3 dilations then two 3×3 erosions equal one 5×5 closing.
    """
    if isinstance(kernel, int):
        kernel = (kernel, kernel)
    kh, kw = kernel
    if kh < 1 or kw < 1 or kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"closing kernel sizes must be odd and positive, got {kernel}")
    if mask.dim() != 4:
        raise ValueError(f"mask must have shape (B, 1, H, W). Got {tuple(mask.shape)}")
    # uint8 rather than bool: the same bytes, and inductor's CPU codegen (torch 2.14)
    # fails on these in-place bool OR/AND chains under torch.compile
    m = mask.to(torch.uint8)
    return (_erode(_dilate(m, kh // 2, kw // 2), kh // 2, kw // 2) | m).bool()


# Rectangle dilation/erosion of a bool mask as OR/AND of shifted slices, separably: measured
# 0.3 ms vs 38 ms for max_pool2d 5x5 on 8x384x384 (CPU, 2 threads). Pixels outside the
# image are ignored, as with max_pool2d's implicit -inf padding.
def _dilate(m: torch.Tensor, ry: int, rx: int) -> torch.Tensor:
    return _shift_reduce(_shift_reduce(m, rx, 3, torch.Tensor.bitwise_or_), ry, 2,
                         torch.Tensor.bitwise_or_)


def _erode(m: torch.Tensor, ry: int, rx: int) -> torch.Tensor:
    return _shift_reduce(_shift_reduce(m, rx, 3, torch.Tensor.bitwise_and_), ry, 2,
                         torch.Tensor.bitwise_and_)


def _shift_reduce(m: torch.Tensor, r: int, dim: int, op) -> torch.Tensor:
    out = m.clone()
    n = m.shape[dim]
    for k in range(1, min(r, n - 1) + 1):
        op(out.narrow(dim, k, n - k), m.narrow(dim, 0, n - k))
        op(out.narrow(dim, 0, n - k), m.narrow(dim, k, n - k))
    return out

"""Which device a run uses, and its mixed-precision dtype (the ``run.device`` / ``train.amp``
rules, one home for training, export, compare and the benchmarks)."""

from __future__ import annotations

import torch

from .errors import ConfigError

__all__ = ["resolve_device", "amp_dtype"]


def resolve_device(name: str, local_rank: int = 0, what: str = "run.device") -> torch.device:
    """``run.device`` as a device: ``auto`` is the rank's GPU where CUDA is available, else
    the CPU; a CUDA name on a machine without CUDA is a :class:`ConfigError`."""
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{what}={name}: CUDA is not available on this machine")
    return dev


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``device`` (``None``: full precision). AMP is a
    CUDA feature here; ``auto`` takes bf16 where the GPU supports it, else fp16."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]

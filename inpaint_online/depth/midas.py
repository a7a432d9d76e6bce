"""MiDaS / DPT through torch.hub code or the built-in MiDaS_small, from local weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import DepthBackend, DepthRequest, DepthSetupError, net_size, resize_frames, torch_home

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


class MidasBackend(DepthBackend):
    """MiDaS / DPT. ``hub_dir``: a local clone of intel-isl/MiDaS (``source="local"``);
    without one, ``MiDaS_small`` is built natively (:mod:`inpaint_online.depth.midas_small`).
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
            where = self.weights or (torch_home() / "hub" / "checkpoints" / wfile)
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

    def prepare(self, frames: np.ndarray, request: DepthRequest):
        """MiDaS's resize (bicubic, aspect kept, sides a multiple of 32), on the CPU."""
        size = net_size(frames.shape[1], frames.shape[2], self.size, self.resize)
        return ("midas", *size), resize_frames(frames, size, "bicubic")

    @torch.inference_mode()
    def infer(self, x: torch.Tensor, key) -> np.ndarray:
        x = (x.to(self.device, non_blocking=True) - self.mean) / self.std
        with torch.autocast(self.device.type, enabled=self.amp):
            d = self.net(x)
        if d.dim() == 4:
            d = d[:, 0]
        return d.float().cpu().numpy()


def resolve_midas_weights(model: str) -> Path | None:
    """``$TORCH_HOME/hub/checkpoints/<official file name>`` if it exists."""
    p = torch_home() / "hub" / "checkpoints" / MIDAS_MODELS[model][0]
    return p if p.is_file() else None

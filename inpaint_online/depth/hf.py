"""Any depth model of the ``transformers`` library, from a local folder (``--backend hf``).

A folder written by ``save_pretrained`` (``config.json``, ``model.safetensors`` or
``pytorch_model.bin``, ``preprocessor_config.json``), e.g.::

    huggingface-cli download depth-anything/Depth-Anything-V2-Small-hf --local-dir models/da2-small
    python precompute_depth.py --backend hf --hf-model models/da2-small INPUTS --cache-dir CACHE

loaded with ``AutoModelForDepthEstimation`` and its ``AutoImageProcessor``, offline
(``local_files_only``, ``HF_HUB_OFFLINE``): nothing is downloaded at run time.

What the model outputs, and what is cached (relative inverse depth, larger = nearer):

============================  ==========================  =================================
family (``config.model_type``) output                      cached as
============================  ==========================  =================================
``depth_anything`` (V1, V2)   relative disparity;          as is; ``metric`` checkpoints
                              ``depth_estimation_type``    (metric depth) are inverted
``dpt`` (DPT, MiDaS 3.x)      relative disparity           as is
``glpn``                      metric depth (m)             inverted
``zoedepth``                  metric depth (m)             inverted
``depth_pro``                 metric depth (m)             inverted
others                        unknown                      ``--hf-output depth|disparity``
============================  ==========================  =================================

Every map is then min-max normalised per frame, as for the other backends.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import one_line, show
from .base import DepthBackend, DepthRequest, DepthSetupError

DISPARITY_FAMILIES = {"dpt"}
DEPTH_FAMILIES = {"glpn", "zoedepth", "depth_pro"}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def output_kind(config, override: str | None = None) -> str:
    """``"disparity"`` or ``"depth"`` for a ``transformers`` config (see the table above);
    ``override`` wins. Unknown families raise :class:`DepthSetupError`."""
    if override is not None:
        if override not in ("depth", "disparity"):
            raise DepthSetupError(f"--hf-output must be 'depth' or 'disparity', got {override!r}")
        return override
    family = getattr(config, "model_type", "?")
    if family == "depth_anything":
        kind = getattr(config, "depth_estimation_type", "relative")
        return "depth" if kind == "metric" else "disparity"
    if family in DISPARITY_FAMILIES:
        return "disparity"
    if family in DEPTH_FAMILIES:
        return "depth"
    raise DepthSetupError(f"the output of {family!r} depth models is not known here: pass "
                          "--hf-output depth (larger = farther) or --hf-output disparity")


def check_model_dir(path: str | os.PathLike) -> Path:
    """The model folder, or a :class:`DepthSetupError` naming what is missing and how to
    get it (nothing is downloaded at run time)."""
    p = Path(path)
    get = (f"download one with `huggingface-cli download <repo> --local-dir {p}` (e.g. "
           "depth-anything/Depth-Anything-V2-Small-hf) or save one with save_pretrained")
    if not p.is_dir():
        raise DepthSetupError(f"--hf-model {show(p)}: no such folder; {get}")
    missing = []
    if not (p / "config.json").is_file():
        missing.append("config.json")
    if not any((p / f).is_file() for f in WEIGHT_FILES):
        missing.append("model.safetensors (or pytorch_model.bin)")
    if not (p / "preprocessor_config.json").is_file():
        missing.append("preprocessor_config.json")
    if missing:
        raise DepthSetupError(f"--hf-model {show(p)}: missing {', '.join(missing)}; {get}")
    return p


def used_parameters(net: torch.nn.Module, processor) -> set[str]:
    """The names of the parameters ``net``'s depth output depends on: one forward and
    backward pass on a gray frame at the processor's size (a weight that gets no gradient
    takes no part in the output)."""
    px = processor(images=[np.full((64, 64, 3), 128, np.uint8)], return_tensors="pt")["pixel_values"]
    was = net.training
    net.train(False)
    for p in net.parameters():
        p.grad = None
    with torch.enable_grad():
        net(pixel_values=px.float()).predicted_depth.float().sum().backward()
    used = {n for n, p in net.named_parameters() if p.grad is not None}
    for p in net.parameters():
        p.grad = None
    net.train(was)
    return used


def check_loaded_weights(net: torch.nn.Module, info: dict, folder: Path, processor) -> None:
    """Refuse a weights file that does not hold the model its config describes: tensors the
    model computes with but the file lacks (left randomly initialised: the maps would be
    noise, silently), tensors of the wrong shape, or tensors the model has no place for (a
    file of another model: with a config of fewer layers than its weights, the extra ones
    would be dropped). Missing weights the model never uses are fine — Intel's DPT-hybrid
    MiDaS checkpoint lacks the first fusion layer's unused residual unit."""
    def first(keys):
        keys = sorted(keys)
        return f"{len(keys)} ({keys[0]}{', ...' if len(keys) > 1 else ''})"
    why = []
    mismatched = [k[0] if isinstance(k, (tuple, list)) else k for k in info.get("mismatched_keys") or []]
    if mismatched:
        why.append(f"tensors of the wrong shape: {first(mismatched)}")
    unexpected = list(info.get("unexpected_keys") or [])
    if unexpected:
        why.append(f"tensors the model has no place for: {first(unexpected)}")
    missing = list(info.get("missing_keys") or [])
    if missing:
        used = used_parameters(net, processor)
        needed = [k for k in missing if k in used]
        if needed:
            why.append(f"tensors the model computes with are missing: {first(needed)}")
    if why:
        raise DepthSetupError(f"--hf-model {show(folder)}: the weights file does not fit the "
                              f"model of its config.json — {'; '.join(why)}; download the model "
                              "folder again (a file of another model or an incomplete copy)")


class HFBackend(DepthBackend):
    """A ``transformers`` depth model from a local folder; batched, on ``device``, in
    ``dtype`` (``fp16``/``bf16`` on CUDA; CPU runs in fp32)."""

    name = "hf"

    def __init__(self, model_dir: str, device: str = "cpu", dtype: str = "auto",
                 output: str | None = None):
        self.dir = check_model_dir(model_dir)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")       # never reach for the network
        try:
            from transformers import AutoImageProcessor, AutoModelForDepthEstimation
        except ImportError:
            raise DepthSetupError("the hf backend needs the transformers library: "
                                  'pip install -e ".[hf]"') from None
        self.device = torch.device(device)
        if dtype == "auto":
            dtype = "fp16" if self.device.type == "cuda" else "fp32"
        if dtype not in DTYPES:
            raise DepthSetupError(f"--hf-dtype must be auto, {', '.join(DTYPES)}; got {dtype!r}")
        if self.device.type != "cuda" and dtype != "fp32":
            raise DepthSetupError(f"--hf-dtype {dtype} needs a CUDA device (got {self.device})")
        self.dtype_name = dtype
        try:
            self.processor = AutoImageProcessor.from_pretrained(str(self.dir), local_files_only=True)
            net, info = AutoModelForDepthEstimation.from_pretrained(
                str(self.dir), local_files_only=True, output_loading_info=True)
        except Exception as e:  # noqa: BLE001 - any loading failure is a setup problem
            raise DepthSetupError(f"--hf-model {show(self.dir)}: cannot load the model "
                                  f"({type(e).__name__}: {one_line(e)})") from None
        check_loaded_weights(net, info, self.dir, self.processor)
        self.family = net.config.model_type
        self.kind = output_kind(net.config, output)
        self.net = net.eval().to(self.device, DTYPES[dtype])
        weights = next(self.dir / f for f in WEIGHT_FILES if (self.dir / f).is_file())
        self.weights_size = weights.stat().st_size

    def settings(self) -> dict:
        return {"model": self.dir.name, "family": self.family, "output": self.kind,
                "weights_size": self.weights_size, "dtype": self.dtype_name}

    def prepare(self, frames: np.ndarray, request: DepthRequest):
        """The model's image processor (resize, normalise), on the CPU."""
        if not frames.flags.writeable:
            frames = frames.copy()
        px = np.asarray(self.processor(images=list(frames), return_tensors="np")["pixel_values"],
                        np.float32)
        return ("hf", *px.shape[-2:]), px

    @torch.inference_mode()
    def infer(self, x: torch.Tensor, key) -> np.ndarray:
        """Processed pixels → ``(N, h, w)`` inverse depth at the model's output resolution,
        not normalised (the caller normalises and resizes)."""
        px = x.to(self.device, DTYPES[self.dtype_name], non_blocking=True)
        out = self.net(pixel_values=px).predicted_depth
        if out.dim() == 4:
            out = out[:, 0]
        d = out.float()
        if self.kind == "depth":
            pos = torch.isfinite(d) & (d > 0)               # the rest counts as the farthest
            far = torch.where(pos, d, torch.zeros_like(d)).flatten(1).amax(1).view(-1, 1, 1)
            d = 1.0 / torch.where(pos, d, far).clamp(min=1e-6)
        return d.cpu().numpy()

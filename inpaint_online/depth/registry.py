"""The backends by name and the ``auto`` choice, in one place."""

from __future__ import annotations

import logging

from .base import FALLBACK, DepthBackend, DepthSetupError, torch_home
from .fallback import FallbackBackend
from .imported import ImportBackend
from .midas import MIDAS_MODELS, MidasBackend, resolve_midas_weights

log = logging.getLogger("inpaint_online.depth")

BACKENDS = ("auto", "hf", "midas", "import", FALLBACK)


def make_backend(name: str, *, device: str = "cpu", model: str = "MiDaS_small",
                 hub_dir: str | None = None, weights: str | None = None,
                 import_dir: str | None = None, import_kind: str = "disparity",
                 amp: bool = True, hf_model: str | None = None, hf_output: str | None = None,
                 hf_dtype: str = "auto") -> DepthBackend:
    """Build a backend by name. ``auto``: ``hf`` when a model folder is configured
    (``hf_model``), else ``midas`` when its weights are available locally, else the
    low-quality fallback, with a warning."""
    if name == "auto" and hf_model:
        name = "hf"
    if name == "auto":
        have = weights is not None or resolve_midas_weights(model) is not None
        if have and (model == "MiDaS_small" or hub_dir):
            name = "midas"
        else:
            log.warning("auto: no local MiDaS weights for %s (looked in %s); using the "
                        "LOW-QUALITY '%s' backend. Put %s there or pass --weights for real "
                        "depth.", model, torch_home() / "hub" / "checkpoints", FALLBACK,
                        MIDAS_MODELS.get(model, ("?",))[0])
            name = FALLBACK
    if name == "hf":
        if not hf_model:
            raise DepthSetupError("the hf backend needs --hf-model DIR (a folder saved with "
                                  "save_pretrained: config.json, weights, preprocessor_config.json)")
        from .hf import HFBackend
        return HFBackend(hf_model, device=device, dtype=hf_dtype, output=hf_output)
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

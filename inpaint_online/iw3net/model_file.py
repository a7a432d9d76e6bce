"""nunif's model files: what iw3 loads (docs/iw3.md).

A nunif model file is a ``torch.save``\\d dict ``{"nunif_model": 1, "name", "updated_at",
"kwargs", "train_kwargs", "state_dict"}``: ``name`` is a registered nunif model, ``kwargs``
its constructor's arguments, ``state_dict`` its weights. iw3 reads it with
``torch.load(weights_only=True)``, so every value is a plain type (str, number, list, dict,
tensor). iw3 finds user models through ``iw3/inpaint_models.yml`` in the nunif checkout (or
``$NUNIF_HOME/iw3/``): a name with the ``image:`` and/or ``video:`` file paths, picked with
``--inpaint-model NAME`` under ``--method forward_inpaint`` (or ``mlbw_l2_inpaint``).
"""

from __future__ import annotations

import io
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..errors import one_line, show
from ..fsutil import atomic_write_bytes
from .light import LightInpaintV1, LightVideoInpaintV1

__all__ = ["NUNIF_MODELS", "nunif_kind", "NunifFileError", "save_nunif_model", "load_nunif_model",
           "is_nunif_model_file", "yml_lines"]

# nunif model name -> (this project's class, model.kind)
NUNIF_MODELS = {
    "inpaint.light_inpaint_v1": (LightInpaintV1, "iw3_light_inpaint_v1"),
    "inpaint.light_video_inpaint_v1": (LightVideoInpaintV1, "iw3_light_video_inpaint_v1"),
    "inpaint.light_video_inpaint_v1_small": (LightVideoInpaintV1, "iw3_light_video_inpaint_v1"),
}


def nunif_kind(name) -> str | None:
    """The ``model.kind`` that takes nunif model ``name`` (None: none does)."""
    return NUNIF_MODELS.get(name, (None, None))[1]


class NunifFileError(ValueError):
    """A model file iw3 or this project cannot use; the message is one line naming it."""


def _plain(v):
    """``v`` with only the types ``torch.load(weights_only=True)`` accepts (others as str)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def save_nunif_model(model: torch.nn.Module, path: str | Path, *, train_kwargs: dict | None = None,
                     updated_at: str | None = None) -> Path:
    """Write ``model`` (an iw3 architecture of this project) as a nunif model file,
    atomically. ``train_kwargs``: what made it (this project's run config), kept as plain
    values."""
    name = getattr(model, "nunif_name", None)
    if name is None:
        raise NunifFileError(f"{type(model).__name__} is not one of iw3's architectures "
                             f"(model.kind iw3_light_inpaint_v1 or iw3_light_video_inpaint_v1): "
                             "iw3 cannot load it")
    data = {"nunif_model": 1, "name": name,
            "updated_at": updated_at or str(datetime.now(timezone.utc)),
            "kwargs": dict(getattr(model, "kwargs", {})),
            "train_kwargs": _plain(train_kwargs) if train_kwargs is not None else None,
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}}
    buf = io.BytesIO()
    torch.save(data, buf)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def is_nunif_model_file(data) -> bool:
    return isinstance(data, dict) and "nunif_model" in data


def load_nunif_model(path: str | Path, data: dict | None = None) -> tuple[torch.nn.Module, dict]:
    """The model of a nunif model file (``weights_only`` load) and the file's other fields.
    A name this project does not have, or weights that do not fit, is one
    :class:`NunifFileError` line."""
    path = Path(path)
    if data is None:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises several types for foreign files
            raise NunifFileError(f"{show(path)}: not a readable model file ({type(e).__name__}: "
                                 f"{one_line(e)[:200]})") from None
    if not is_nunif_model_file(data):
        raise NunifFileError(f"{show(path)}: not a nunif model file (no 'nunif_model' key)")
    name = data.get("name")
    if name not in NUNIF_MODELS:
        raise NunifFileError(f"{show(path)}: nunif model {name!r} is not one this project has "
                             f"(it has {', '.join(sorted(NUNIF_MODELS))})")
    cls, _ = NUNIF_MODELS[name]
    kwargs = data.get("kwargs") or {}
    try:
        model = cls(**kwargs)
        model.load_state_dict(data["state_dict"])
    except (TypeError, RuntimeError, KeyError) as e:
        raise NunifFileError(f"{show(path)}: the weights do not fit {name} "
                             f"({one_line(e)[:300]})") from None
    meta = {k: v for k, v in data.items() if k != "state_dict"}
    return model.eval(), meta


def yml_lines(name: str, image: str | Path | None = None, video: str | Path | None = None) -> str:
    """The ``inpaint_models.yml`` entry iw3 needs for these files (absolute paths)."""
    lines = [f"{name}:"]
    for key, p in (("image", image), ("video", video)):
        if p is not None:
            lines.append(f"  {key}: {Path(p).resolve()}")
    return "\n".join(lines)

"""Training configuration: a YAML file of sections, ``section.key=value`` CLI overrides.

Every section is a dataclass with its defaults (the timm habit: the file sets defaults, the
command line overrides them, the resolved config is saved with the run). Unknown sections
or keys and values of the wrong type are errors that name the file, the key and what is
allowed — a typo must not silently train with the default.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ConfigError
from .losses import LossConfig
from .models import ModelConfig
from .stream import CollateConfig, DataConfig
from .warp import WarpSamplerConfig

__all__ = ["RunConfig", "OptimConfig", "TrainConfig", "Config", "ConfigError", "load_config"]


@dataclass
class RunConfig:
    name: str = "demo"
    out_dir: str = "runs"                  # the run writes to out_dir/name/
    seed: int = 0
    device: str = "auto"                   # auto | cpu | cuda | cuda:N


@dataclass
class OptimConfig:
    lr: float = 2e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 500
    schedule: str = "cosine"               # cosine | constant (after the linear warmup)
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0                 # max global grad norm; 0 = off

    def validate(self) -> None:
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"optim.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")


@dataclass
class TrainConfig:
    steps: int = 200_000                   # total optimiser steps (the schedule's length)
    stop_at: int = 0                       # stop this invocation at this step (0 = steps)
    max_minutes: float = 0.0               # > 0: stop this invocation after this much wall
                                           # time (validated and saved; --resume continues)
    amp: str = "auto"                      # auto (bf16 on CUDA, off on CPU) | bf16 | fp16 | off
    compile: bool = False                  # torch.compile the model
    log_every: int = 50
    val_every: int = 2000
    ckpt_every: int = 2000
    image_every: int = 1000
    best_metric: str = "psnr_hole"         # validation metric that picks best.pt (higher wins)
    init_from: str = ""                    # a checkpoint whose weights start the run (fine-tune)
    accum_steps: int = 1                   # batches per optimiser step (gradient accumulation)
    ema_decay: float = 0.0                 # > 0: keep an EMA of the weights (e.g. 0.999),
                                           # validated and saved beside the raw ones

    def validate(self) -> None:
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(f"train.amp must be auto, bf16, fp16 or off, got {self.amp!r}")
        if self.best_metric not in ("psnr_hole", "ssim_hole", "psnr_full"):
            raise ValueError(f"train.best_metric must be psnr_hole, ssim_hole or psnr_full, "
                             f"got {self.best_metric!r}")
        if self.max_minutes < 0:
            raise ValueError(f"train.max_minutes must be >= 0 (0 = no limit), got {self.max_minutes}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.accum_steps < 1:
            raise ValueError(f"train.accum_steps must be >= 1, got {self.accum_steps}")
        if self.steps < 1 or min(self.log_every, self.val_every, self.ckpt_every, self.image_every) < 1:
            raise ValueError("train.steps and the *_every intervals must be >= 1")


SECTIONS = {"run": RunConfig, "data": DataConfig, "warp": WarpSamplerConfig,
            "collate": CollateConfig, "model": ModelConfig, "loss": LossConfig,
            "optim": OptimConfig, "train": TrainConfig}


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    warp: WarpSamplerConfig = field(default_factory=WarpSamplerConfig)
    collate: CollateConfig = field(default_factory=CollateConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        """Plain values only (lists for tuples): YAML- and ``weights_only``-safe."""
        def plain(v):
            if isinstance(v, (tuple, list)):
                return [plain(x) for x in v]
            return v
        return {s: {k: plain(v) for k, v in dataclasses.asdict(getattr(self, s)).items()}
                for s in SECTIONS}

    @property
    def run_dir(self) -> Path:
        return Path(self.run.out_dir) / self.run.name


def _coerce(where: str, default, value):
    """``value`` converted to the type of ``default``, or a ConfigError."""
    def bad(expected):
        return ConfigError(f"{where}: expected {expected}, got {value!r}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad("an integer")
    if isinstance(default, float):
        if isinstance(value, str):       # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad("a number") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise bad("a finite number")
            return float(value)
        raise bad("a number")
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise bad("a string")
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad(f"a list like {list(default)}")
        if where.rsplit(".", 1)[-1] not in _VARIABLE_LENGTH and len(value) != len(default):
            raise bad(f"a list of {len(default)} values like {list(default)}")
        if not default:
            return tuple(value)
        return tuple(_coerce(where, default[0], v) for v in value)
    return value


# tuple fields whose length is free (choices, dilations); the others are fixed-size pairs
_VARIABLE_LENGTH = {"divergence_choices", "convergence_choices", "mapper_kinds",
                    "closing_choices", "dilations", "val_sources", "edge_dilation_choices"}


def _section(name: str, values, source: str):
    cls = SECTIONS[name]
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: section '{name}' must be a mapping, got {values!r}")
    defaults = cls()
    known = {f.name for f in dataclasses.fields(cls)}
    extra = {"level"} if cls is WarpSamplerConfig else set()
    unknown = sorted(set(values) - known - extra)
    if name == "collate" and "mode" in unknown:
        raise ConfigError(f"{source}: collate.mode (bilinear/nearest splatting of the old "
                          "round-trip mask) was replaced by collate.method: 'geometric' "
                          "(exact occlusion, default) or 'iw3' (iw3's masks); see docs/geometry.md")
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(name + '.' + k for k in unknown)}; "
                          f"'{name}' has: {', '.join(sorted(known | extra))}")
    kw = {}
    for k, v in values.items():
        if k == "level":
            kw[k] = _coerce(f"{source}: {name}.level", 1, v)
        else:
            kw[k] = _coerce(f"{source}: {name}.{k}", getattr(defaults, k), v)
    try:
        if cls is WarpSamplerConfig:
            obj = WarpSamplerConfig.from_dict(kw)
        else:
            obj = cls(**kw)
            if hasattr(obj, "validate"):
                obj.validate()
    except (ValueError, TypeError) as e:       # a value validate() cannot even compare
        raise ConfigError(f"{source}: {e}") from None
    return obj


def at_least_one(text: str) -> int:
    """argparse type of counts: an integer >= 1 (0 used to be ignored or misreported)."""
    import argparse
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def parse_override(text: str) -> tuple[str, str, object]:
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {text!r}: expected section.key=value, e.g. data.batch_size=8")
    key, raw = text.split("=", 1)
    section, name = key.split(".", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: cannot parse the value ({e})") from None
    return section, name, value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = (),
                base: dict | None = None) -> Config:
    """Defaults ← ``base`` dict ← YAML file ← ``section.key=value`` overrides."""
    tree: dict = {}

    def merge(src: dict, source: str):
        if not isinstance(src, dict):
            raise ConfigError(f"{source}: expected a mapping of sections, got {type(src).__name__}")
        for s, vals in src.items():
            if s not in SECTIONS:
                raise ConfigError(f"{source}: unknown section '{s}'; sections: {', '.join(SECTIONS)}")
            if vals is not None and not isinstance(vals, dict):
                raise ConfigError(f"{source}: section '{s}' must be a mapping, got {vals!r}")
            tree.setdefault(s, {}).update(vals or {})

    if base:
        merge(base, "config")
    source = "config"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e})") from None
        merge(data or {}, str(p))
        source = str(p)
    for text in overrides:
        s, k, v = parse_override(text)
        merge({s: {k: v}}, f"override {text!r}")
        source = f"{source} + overrides" if "overrides" not in source else source
    cfg = Config(**{s: _section(s, tree.get(s), source) for s in SECTIONS})
    _check_across(cfg, source)
    return cfg


def _check_across(cfg: Config, source: str) -> None:
    """Settings of one section that another section's must fit."""
    if cfg.model.kind == "iw3_light_video_inpaint_v1" and cfg.data.clip_len % 12:
        raise ConfigError(f"{source}: model.kind iw3_light_video_inpaint_v1 mixes frames in runs "
                          f"of 12: data.clip_len must be 12 (or a multiple), got {cfg.data.clip_len}")
    if cfg.data.source == "folder" and cfg.collate.with_depth:
        raise ConfigError(f"{source}: collate.with_depth needs depth, and a fixed dataset "
                          "(data.source folder) has none: set collate.with_depth false")
    if cfg.data.source == "folder" and cfg.data.composite_p > 0:
        raise ConfigError(f"{source}: data.composite_p makes layered samples from the depth "
                          "cache; a fixed dataset (data.source folder) has its holes already: "
                          "set data.composite_p 0")
    if cfg.loss.blend_l1 > 0 and (cfg.model.prefill != "dual"
                                  or cfg.model.kind not in ("gated_unet", "temporal_unet")):
        raise ConfigError(f"{source}: loss.blend_l1 scores the blend of a model given both fills: "
                          f"it needs model.prefill dual and model.kind gated_unet or temporal_unet "
                          f"(got prefill {cfg.model.prefill}, kind {cfg.model.kind})")
    if cfg.model.kind == "iw3_light_inpaint_v1" and cfg.data.clip_len > 1:
        raise ConfigError(f"{source}: model.kind iw3_light_inpaint_v1 is iw3's image model: "
                          "data.clip_len must be 1 (iw3_light_video_inpaint_v1 takes clips)")

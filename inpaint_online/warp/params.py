"""Random warp parameters: depth mappers, a seeded per-sample sampler, and applying them.

Draw parameters (:class:`WarpSampler`, seeded by a ``torch.Generator``), then apply them
(:func:`apply_mapper`, :func:`masks_from_params`), as torchvision's v2 transforms do: the
split makes batches reproducible and lets an exporter log every sample's parameters.

Defaults follow iw3's training data (docs/design.md, "Facts the code relies on"): level-1
divergence (p=0.7 one of {2, 2.5, 3, 4} %, else U(0, 5)), convergence (p=0.7 one of
{0, 0.5, 1}, else U(0, 1)), identity mapper with p=0.7, per-eye shift capped at 32 px, a 5×5
closing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F

from .edges import dilate_edges
from .morph import close_mask
from .occlusion import occlusion_mask
from .shift import SHIFT_PER_PERCENT

__all__ = ["MAPPERS", "apply_mapper", "WarpSamplerConfig", "WarpParams", "WarpSampler",
           "masks_from_params", "DIVERGENCE_LEVELS", "IW3_EDGE_DILATION"]

# Monotone curves [0, 1] -> [0, 1] applied to normalised inverse depth before the shift,
# so the model sees varied depth distributions. "strength" is the curve's parameter.
MAPPERS = ("identity", "pow", "softplus", "inv_softplus")

# iw3's generator's draw of its edge_dilation option (depth at >= 512 px): 0 with p = 1/2,
# 1 with 1/4, 2, 3, 4 with 1/12 each (nunif iw3/training/inpaint/create_training_data.py)
IW3_EDGE_DILATION = (0,) * 6 + (1, 1, 1, 2, 3, 4)

# iw3's divergence levels: (choices, range) in % of the frame width.
DIVERGENCE_LEVELS = {
    1: ((2.0, 2.5, 3.0, 4.0), (0.0, 5.0)),
    2: ((4.0, 5.0, 6.0), (3.0, 8.0)),
    3: ((7.0, 8.0, 9.0), (6.0, 11.0)),
}


def _softplus_curve(d: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(softplus(k(d-1)) - softplus(-k)) / (log 2 - softplus(-k)): convex, 0->0, 1->1."""
    lo = F.softplus(-k)
    return (F.softplus(k * (d - 1.0)) - lo) / (math.log(2.0) - lo)


def _inv_softplus_curve(v: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_softplus_curve` (concave)."""
    lo = F.softplus(-k)
    y = v * (math.log(2.0) - lo) + lo
    return 1.0 + torch.log(torch.expm1(y).clamp(min=1e-30)) / k


def apply_mapper(depth: torch.Tensor, kind: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """Apply a per-sample monotone mapper to ``(B, 1, H, W)`` depth in ``[0, 1]``.

    Args:
        kind: ``(B,)`` long, index into :data:`MAPPERS`.
        strength: ``(B,)`` float: the exponent for ``pow``, the sharpness ``k > 0`` for the
            softplus curves; ignored for ``identity``.
    """
    b = depth.shape[0]
    kind = kind.to(depth.device).view(b, 1, 1, 1)
    k = strength.to(depth.device, torch.float32).view(b, 1, 1, 1).clamp(min=1e-3)
    out = depth
    out = torch.where(kind == 1, depth.clamp(min=0.0).pow(k), out)
    out = torch.where(kind == 2, _softplus_curve(depth, k), out)
    out = torch.where(kind == 3, _inv_softplus_curve(depth, k), out)
    return out.clamp(0.0, 1.0)


@dataclass
class WarpSamplerConfig:
    """Distributions of the per-sample warp parameters (all overridable from YAML/CLI)."""
    divergence_choices: tuple[float, ...] = DIVERGENCE_LEVELS[1][0]
    divergence_range: tuple[float, float] = DIVERGENCE_LEVELS[1][1]
    divergence_choice_p: float = 0.7
    convergence_choices: tuple[float, ...] = (0.0, 0.5, 1.0)
    convergence_range: tuple[float, float] = (0.0, 1.0)
    convergence_choice_p: float = 0.7
    mapper_identity_p: float = 0.7
    mapper_kinds: tuple[str, ...] = ("pow", "softplus", "inv_softplus")
    pow_range: tuple[float, float] = (0.5, 2.0)        # exponent, drawn log-uniform
    softplus_range: tuple[float, float] = (2.0, 8.0)   # sharpness k, drawn uniform
    closing_choices: tuple[tuple[int, int], ...] = ((5, 5),)  # (0, 0) = no closing
    left_p: float = 0.5                                 # probability of the left-view case
    max_shift: float = 32.0                             # per-eye shift cap in pixels
    # iterations of iw3's foreground edge dilation of the depth, one drawn uniformly from
    # the list per sample (repeats weight it); the level presets draw as iw3's generator
    # does (IW3_EDGE_DILATION): holes sit where iw3's inference puts them (docs/iw3.md)
    edge_dilation_choices: tuple[int, ...] = (0,)

    @classmethod
    def level(cls, level: int, **overrides) -> "WarpSamplerConfig":
        """iw3's divergence level 1, 2 or 3; fields given in ``overrides`` win (a level with
        its own ``divergence_range``, say)."""
        if level not in DIVERGENCE_LEVELS:
            raise ValueError(f"divergence level must be one of {sorted(DIVERGENCE_LEVELS)}, got {level}")
        choices, rng = DIVERGENCE_LEVELS[level]
        return cls(**{"divergence_choices": choices, "divergence_range": rng,
                      "edge_dilation_choices": IW3_EDGE_DILATION, **overrides})

    def describe_divergence(self) -> str:
        """``warp level N`` when the divergences are iw3's level N, else their upper bound."""
        mine = (tuple(self.divergence_choices), tuple(self.divergence_range))
        return next((f"warp level {n}" for n, lv in DIVERGENCE_LEVELS.items() if mine == lv),
                    f"divergence <= {max(self.divergence_range[1], *self.divergence_choices):g} %")

    @classmethod
    def from_dict(cls, values: dict) -> "WarpSamplerConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known - {"level"})
        if unknown:
            raise ValueError(f"unknown warp option(s) {unknown}; known: {sorted(known | {'level'})}")
        values = dict(values)
        tuples = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v)
                  if isinstance(v, (list, tuple)) else v for k, v in values.items()}
        level = tuples.pop("level", None)
        cfg = cls.level(level, **tuples) if level is not None else cls(**tuples)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        bad = [k for k in self.mapper_kinds if k not in MAPPERS[1:]]
        if bad:
            raise ValueError(f"unknown mapper(s) {bad}; choose from {MAPPERS[1:]}")
        for name in ("divergence_choice_p", "convergence_choice_p", "mapper_identity_p", "left_p"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        for kh, kw in self.closing_choices:
            if (kh, kw) != (0, 0) and (kh % 2 == 0 or kw % 2 == 0 or kh < 1 or kw < 1):
                raise ValueError(f"closing sizes must be odd (or (0, 0) for none), got {(kh, kw)}")
        if self.divergence_range[0] < 0 or self.divergence_range[1] < self.divergence_range[0]:
            raise ValueError(f"divergence_range must be 0 <= lo <= hi, got {self.divergence_range}")
        if self.max_shift <= 0:
            raise ValueError(f"max_shift must be positive, got {self.max_shift}")
        if not self.edge_dilation_choices or any(
                not isinstance(k, int) or not 0 <= k <= 16 for k in self.edge_dilation_choices):
            raise ValueError("edge_dilation_choices must be a list of iteration counts in "
                             f"0..16, got {self.edge_dilation_choices}")


@dataclass
class WarpParams:
    """Per-sample warp parameters of one batch; every tensor is ``(B,)``."""
    divergence: torch.Tensor       # % of the frame width, after the max_shift cap
    convergence: torch.Tensor
    mapper: torch.Tensor           # long, index into MAPPERS
    mapper_strength: torch.Tensor
    closing: torch.Tensor          # long, index into closing_choices
    left: torch.Tensor             # bool, True = left-view case
    width: torch.Tensor            # frame width in pixels the shift is measured in
    closing_choices: tuple[tuple[int, int], ...] = field(default=((5, 5),))
    max_shift: float = 32.0
    # host-side bound of every sample's |shift| (px), known when the parameters are drawn:
    # lets the mask code size its padding and occluder window without reading the tensors
    # (no device sync); never above max_shift
    shift_bound: float = 32.0
    # iw3's edge dilation iterations per sample (long; None: none drawn) and their host-side
    # maximum (the loop count, read without a device sync)
    edge_dilation: torch.Tensor | None = None
    dilation_bound: int = 0

    def map(self, fn) -> "WarpParams":
        """The same parameters with ``fn`` applied to every ``(B,)`` tensor."""
        return WarpParams(**{f.name: (fn(v) if isinstance(v, torch.Tensor) else v)
                             for f in fields(self) for v in [getattr(self, f.name)]})

    def to(self, device) -> "WarpParams":
        return self.map(lambda v: v.to(device))

    def __len__(self) -> int:
        return self.divergence.shape[0]

    def records(self) -> list[dict]:
        """One plain dict per sample (for logs and export indexes)."""
        cols = {f.name: getattr(self, f.name).tolist() for f in fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)}
        out = []
        for i in range(len(self)):
            r = {k: v[i] for k, v in cols.items()}
            r["mapper"] = MAPPERS[r["mapper"]]
            r["closing"] = list(self.closing_choices[r["closing"]])
            r["view"] = "left" if r.pop("left") else "right"
            out.append(r)
        return out


class WarpSampler:
    """Draws :class:`WarpParams` from a :class:`WarpSamplerConfig`.

    All draws happen on the CPU from the given ``torch.Generator`` (so a batch is the same
    for the same seed on any device), then :meth:`WarpParams.to` moves them.
    """

    def __init__(self, config: WarpSamplerConfig | None = None):
        self.config = config or WarpSamplerConfig()
        self.config.validate()

    def sample(self, batch_size: int, width: float | torch.Tensor,
               generator: torch.Generator | None = None) -> WarpParams:
        c, g, n = self.config, generator, batch_size

        def uniform(lo, hi):
            return lo + (hi - lo) * torch.rand(n, generator=g)

        def choice_or_uniform(choices, rng, p):
            pick = torch.tensor(choices, dtype=torch.float32)[
                torch.randint(len(choices), (n,), generator=g)]
            return torch.where(torch.rand(n, generator=g) < p, pick, uniform(*rng))

        div = choice_or_uniform(c.divergence_choices, c.divergence_range, c.divergence_choice_p)
        conv = choice_or_uniform(c.convergence_choices, c.convergence_range, c.convergence_choice_p)
        kinds = torch.tensor([MAPPERS.index(k) for k in c.mapper_kinds], dtype=torch.long)
        mapper = kinds[torch.randint(len(kinds), (n,), generator=g)]
        mapper = torch.where(torch.rand(n, generator=g) < c.mapper_identity_p, 0, mapper)
        log_pow = uniform(math.log(c.pow_range[0]), math.log(c.pow_range[1])).exp()
        strength = torch.where(mapper == 1, log_pow, uniform(*c.softplus_range))
        closing = torch.randint(len(c.closing_choices), (n,), generator=g)
        left = torch.rand(n, generator=g) < c.left_p
        width = torch.as_tensor(width, dtype=torch.float32).expand(n).clone()
        # cap the per-eye shift: max |d - conv| is max(conv, 1 - conv) for d in [0, 1]
        span = torch.maximum(conv, 1.0 - conv).clamp(min=1e-6)
        div = torch.minimum(div, c.max_shift / (span * width * SHIFT_PER_PERCENT))
        # drawn on the host, so this reduction over B numbers reads no device memory
        bound = float((span * width * SHIFT_PER_PERCENT * div).max()) + 1e-3 if n else 0.0
        dil, dil_bound = None, 0
        if any(c.edge_dilation_choices):   # drawn only when asked: other configs keep their draws
            table = torch.tensor(c.edge_dilation_choices, dtype=torch.long)
            dil = table[torch.randint(len(table), (n,), generator=g)]
            dil_bound = int(dil.max()) if n else 0
        return WarpParams(div, conv, mapper, strength, closing, left, width,
                          tuple(tuple(k) for k in c.closing_choices), c.max_shift,
                          min(bound, c.max_shift), dil, dil_bound)


def masks_from_params(depth: torch.Tensor, params: WarpParams, *, method: str = "geometric",
                      border: str = "pad", check: bool = False, return_layered: bool = False):
    """Hole masks ``(B, 1, H, W)`` for a batch of depth maps and their drawn parameters.

    Grows each sample's near side by its drawn edge dilation (:mod:`.edges`, iw3's
    ``edge_dilation``), applies the mapper, computes
    :func:`~inpaint_online.warp.occlusion_mask` for each sample's view (``method``: ``"geometric"`` or ``"iw3"``), then each sample's closing (a
    loop over the few configured kernel sizes, never over samples). No host sync: the
    padding and occluder window come from the host-side ``params.shift_bound``. With
    ``return_layered`` also iw3's layered-hole class (before closing).
    """
    params = params.to(depth.device)
    depth = depth.float()
    if params.edge_dilation is not None:
        depth = dilate_edges(depth, params.edge_dilation, params.dilation_bound)
    mapped = apply_mapper(depth, params.mapper, params.mapper_strength)
    raw, layered = occlusion_mask(mapped, params.divergence, params.convergence, params.left,
                                  closing=None, width=params.width, method=method, border=border,
                                  max_shift=params.shift_bound, check=check, return_layered=True)
    out = raw
    for i, kernel in enumerate(params.closing_choices):
        if tuple(kernel) == (0, 0):
            continue
        sel = (params.closing == i).view(-1, 1, 1, 1)
        out = torch.where(sel, close_mask(raw, tuple(kernel)), out)
    return (out, layered) if return_layered else out

"""What an export writes (size, clip length, counts, name prefix), resolved and checked
against what iw3's inpainting trainer reads before any work."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from ..config import Config, ConfigError

__all__ = ["ExportPlan", "plan_export", "default_size", "default_eval_count", "iw3_batch_note",
           "export_settings", "IW3_SIZE", "IW3_CLIP", "IW3_EVAL", "DEFAULT_EVAL", "DEFAULT_CLIP"]


IW3_SIZE = 256           # iw3's training crop: every stored sample must be at least this
IW3_CLIP = 12            # frames iw3's video trainer takes from a clip folder
IW3_EVAL = 8             # its default batch size: it evaluates images in batches of its
                         # --batch-size with drop_last, so fewer samples give no batch at all
                         # (clips one by one: any number works)
DEFAULT_EVAL = 64        # images: the default eval split serves --batch-size up to 64
DEFAULT_CLIP = 16        # what iw3's own video generator writes
PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")


@dataclass
class ExportPlan:
    """What an export writes, resolved and checked before any work."""
    size: int              # stored side (the crop of the exported samples)
    clip_len: int          # frames per clip (1 for images)
    prefix: str            # sample names: PREFIX_00000012 (_C.png, _M.png, ...)
    count: int
    eval_count: int
    settings: dict = field(default_factory=dict)   # what decides the bytes (P.export.json)
    stream: str = ""       # a chosen --export-prefix: mixed into the sample seeds, so two
                           # exports of the same settings under two names are not copies


def default_size(records: list[dict], cfg: Config) -> int:
    """512 where the cached frames allow it at the configured scale (median short side times
    the largest scale), never below iw3's 256; a multiple of 8."""
    sides = sorted(min(r["depth_size"]) for r in records if r.get("depth_size"))
    if not sides:
        return 512
    allowed = sides[len(sides) // 2] * cfg.data.scale_range[1]
    return int(min(512, max(IW3_SIZE, allowed)) // 8 * 8)


def default_eval_count(count: int, video: bool) -> int:
    """``--export-eval-count``'s default: a tenth of ``count``, at least 64 images (iw3's
    trainer evaluates images in batches of its ``--batch-size`` with drop_last: 64 serves
    every batch size up to 64) or 8 clips (it evaluates clips one at a time)."""
    return max(IW3_EVAL if video else DEFAULT_EVAL, count // 10)


def iw3_batch_note(plan: "ExportPlan") -> str:
    """What the eval split allows iw3's trainer: images need ``--batch-size`` <= eval samples."""
    if plan.clip_len > 1 or not plan.eval_count:
        return ""
    return f"; iw3's trainer reads its eval split with --batch-size up to {plan.eval_count}"


def plan_export(cfg: Config, records: list[dict], count: int, eval_count: int | None, *,
                size: int | None = None, clip_len: int | None = None, prefix: str | None = None,
                masked_input: bool = True, force: bool = False,
                min_yield: float = 0.25) -> ExportPlan:
    """Resolve the export's size, clip length, counts and name prefix, and refuse (unless
    ``force``) an export iw3's inpainting trainer could not read, saying why and the fix."""
    if count < 0 or (eval_count is not None and eval_count < 0):
        raise ConfigError("--export-count and --export-eval-count must be >= 0")
    video = cfg.data.clip_len > 1
    plan = ExportPlan(
        size=size if size is not None else default_size(records, cfg),
        clip_len=(clip_len if clip_len is not None else DEFAULT_CLIP) if video else 1,
        prefix="", count=count,
        eval_count=default_eval_count(count, video) if eval_count is None else eval_count)
    if not video and clip_len not in (None, 1):
        raise ConfigError("--export-clip-len is for video configs (data.clip_len > 1)")
    if plan.size < 16 or plan.clip_len < 1:
        raise ConfigError("--export-size must be >= 16 and --export-clip-len >= 1")
    if not 0 <= min_yield < 1:
        raise ConfigError(f"--export-min-yield {min_yield}: use a share in [0, 1) (0: keep every source)")
    why = []
    if plan.size < IW3_SIZE:
        why.append(f"--export-size {plan.size} is below the {IW3_SIZE} px iw3's trainer crops "
                   f"from every sample (use --export-size {IW3_SIZE} or more)")
    if video and plan.clip_len < IW3_CLIP:
        why.append(f"--export-clip-len {plan.clip_len} is below the {IW3_CLIP} frames iw3's video "
                   f"trainer takes from a clip (use {IW3_CLIP} or more; cache clips that long "
                   "with precompute_depth.py --clip-len)")
    if plan.eval_count < (1 if video else IW3_EVAL):
        why.append(f"--export-eval-count {plan.eval_count} is below iw3's eval batch of "
                   f"{1 if video else IW3_EVAL} (fewer samples give it no eval batch at all)")
    if why and not force:
        raise ConfigError("this export could not be read by iw3's inpainting trainer: "
                          + "; ".join(why) + ". Pass --export-force to write it anyway "
                          "(for other readers)")
    plan.settings = export_settings(cfg, masked_input, plan, min_yield)
    if prefix is None:
        digest = hashlib.blake2b(json.dumps(plan.settings, sort_keys=True).encode(), digest_size=4)
        prefix = "io" + digest.hexdigest()
    else:
        plan.stream = prefix
    if not PREFIX_RE.match(prefix):
        raise ConfigError(f"--export-prefix {prefix!r}: use 1-32 letters, digits and '-' "
                          "(no '_': it separates the prefix from the number)")
    plan.prefix = prefix
    return plan


def export_settings(cfg: Config, masked_input: bool, plan: ExportPlan, min_yield: float) -> dict:
    c = cfg.to_dict()
    # what decides the samples' bytes; run/optim/train/model/loss do not (run.seed does)
    return {"format": "inpaint_online.export/3", "seed": cfg.run.seed, "data": c["data"],
            "warp": c["warp"], "collate": c["collate"], "masked_input": masked_input,
            "size": plan.size, "clip_len": plan.clip_len, "min_yield": min_yield}

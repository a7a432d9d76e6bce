"""Leaving out the sources that cannot give holes at an export's warp level
(``--export-min-yield``; docs/export.md)."""

from __future__ import annotations

import logging
import math

from ..errors import DataError, show

__all__ = ["SourceYield"]

log = logging.getLogger("inpaint_online.export")


class SourceYield:
    """Which sources an export leaves out for giving too few holes (``min_yield`` = Y).

    From its first dropped sample on, a source's draws go through a sequential probability
    ratio test of "keeps Y/2 of its samples" against "keeps 2Y" (Wald): each drop adds
    log((1-Y/2)/(1-2Y)), each kept sample log((Y/2)/(2Y)). At log 20 the source is left out
    from the next batch on (``left_out``: source -> the position that decided it); at
    -log 20 it has proven itself and is not tested again. At Y = 0.25 (simulated): a source
    that keeps none is left out after 6 drops in a row, one that keeps 1 in 8 is kept 1 time
    in 60, one that keeps half is left out 1 time in 16, 80 %: 1 in 1,700. The ledger lives
    in the split's progress state, so a resumed export decides the same."""

    BOUND = math.log(20)

    def __init__(self, st: dict, min_yield: float, sources: set, split: str, level, min_px: int):
        self.ledger = st.setdefault("at_risk", {})      # source -> [dropped, kept, llr] or "ok"
        self.out = st.setdefault("left_out", {})
        self.min_yield, self.sources, self.split = min_yield, sources, split
        self.level, self.min_px = level, min_px
        bad, good = min_yield / 2, min(2 * min_yield, 0.99)
        self.w_drop = math.log((1 - bad) / (1 - good)) if min_yield > 0 else 0.0
        self.w_kept = math.log(bad / good) if min_yield > 0 else 0.0
        self.check()

    def skip(self, source: str, batch_start: int) -> bool:
        """Left out before this batch (decisions take effect at batch boundaries, so a
        resumed batch is filtered as the uninterrupted one was)."""
        return self.out.get(source, 1 << 62) <= batch_start

    def record(self, rec: dict, kept: bool, pos: int) -> None:
        src = rec["source"]
        if self.min_yield <= 0 or src in self.out:
            return
        e = self.ledger.get(src)
        if e == "ok" or (e is None and kept):
            return
        e = e or [0, 0, 0.0]
        e[1 if kept else 0] += 1
        e[2] += self.w_kept if kept else self.w_drop
        self.ledger[src] = e
        if e[2] <= -self.BOUND:
            self.ledger[src] = "ok"
        elif e[2] >= self.BOUND:
            self.out[src] = pos + 1
            size = rec.get("depth_size")
            frames = f" (cached frames {size[0]}x{size[1]})" if size else ""
            log.warning("%s: left out of the %s export: %d of its %d samples since its first drop "
                        "had >= %d hole px per frame at %s%s; a higher warp level, "
                        "larger frames or a lower --export-min-yield keep it", show(src),
                        self.split, e[1], e[0] + e[1], self.min_px, self.level, frames)
            self.check()

    def check(self) -> None:
        if self.sources and self.sources <= set(self.out):
            raise DataError(
                f"export {self.split}: every source was left out: too few of their samples had "
                f">= {self.min_px} hole px per frame at {self.level} (--export-min-yield "
                f"{self.min_yield:g}); use a higher warp.level, a lower collate.min_hole_px or "
                "--export-min-yield 0")

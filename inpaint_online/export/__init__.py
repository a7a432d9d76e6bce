"""The export stage: ``--export-dir`` writes the stream's pairs as a fixed dataset in iw3's
layout (docs/export.md; docs/design.md, "export").

* :mod:`.run`: :func:`export_dataset` (resumable, deterministic) and its :class:`ExportSummary`;
* :mod:`.plan`: :func:`plan_export`, the checks against what iw3's trainer reads;
* :mod:`.layout`: iw3's on-disk layout, :func:`read_sample`;
* :mod:`.source_yield`: leaving out sources that give too few holes.
"""

from .layout import SPLITS, read_sample
from .plan import DEFAULT_CLIP, IW3_CLIP, IW3_EVAL, IW3_SIZE, ExportPlan, plan_export
from .run import ExportSummary, export_dataset

__all__ = ["export_dataset", "ExportSummary", "plan_export", "ExportPlan", "read_sample",
           "SPLITS", "IW3_SIZE", "IW3_CLIP", "IW3_EVAL", "DEFAULT_CLIP"]

"""The depth cache stage: fill it once from raw media, read (RGB, depth) frames from it
(docs/design.md, "cache").

* :mod:`.store`: the on-disk format (uint16 maps at :data:`DEPTH_SCALE`, the manifest and its
  records, integrity checks, fingerprints);
* :mod:`.read`: :func:`open_cache`, :func:`load_frames`, :func:`cache_pairs` (what training,
  export and the tools read);
* :mod:`.fill`: :func:`precompute` (resumable, shardable), with :mod:`.pipeline` (decoding
  workers → depth model → writer thread);
* :mod:`.verify`: :func:`verify` and repair; :mod:`.cli`: ``precompute_depth.py``.
"""

from .fill import VIDEO_NORMS, precompute
from .read import cache_pairs, has_cache, load_frames, load_pair, open_cache
from .store import (
                    DEPTH_SCALE,
                    CacheIntegrityError,
                    Manifest,
                    Sampling,
                    Summary,
                    entry_label,
                    load_cached_depth,
)
from .verify import VerifyReport, verify

__all__ = ["precompute", "verify", "VerifyReport", "VIDEO_NORMS", "open_cache", "load_frames",
           "load_pair", "cache_pairs", "has_cache", "Manifest", "Sampling", "Summary", "entry_label",
           "CacheIntegrityError", "load_cached_depth", "DEPTH_SCALE"]

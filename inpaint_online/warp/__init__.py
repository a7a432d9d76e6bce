"""The warp stage: hole masks at the original image position from depth, batched on the device
(docs/design.md, "warp").

What other stages use:

* :func:`forward_warp`, :func:`fill_from_background` (:mod:`.splat`) and
  :func:`disparity_shift`, :func:`view_sign`, :data:`SHIFT_PER_PERCENT` (:mod:`.shift`, where
  the conventions are stated once);
* :func:`occlusion_mask` with its :data:`MASK_METHODS` (:mod:`.occlusion`) and
  :func:`close_mask` (:mod:`.morph`);
* the random parameters: :class:`WarpSampler` draws, :func:`masks_from_params` applies
  (:mod:`.params`).

:mod:`.reference` holds the slow per-pixel versions the tests compare against.
"""

from .morph import close_mask
from .occlusion import MASK_METHODS, occlusion_mask, shift_bounds
from .params import (
                     DIVERGENCE_LEVELS,
                     MAPPERS,
                     WarpParams,
                     WarpSampler,
                     WarpSamplerConfig,
                     apply_mapper,
                     masks_from_params,
)
from .shift import SHIFT_PER_PERCENT, check_depth, disparity_shift, view_sign
from .splat import fill_from_background, forward_warp

__all__ = ["forward_warp", "fill_from_background", "disparity_shift", "view_sign",
           "check_depth", "SHIFT_PER_PERCENT", "occlusion_mask", "MASK_METHODS", "shift_bounds",
           "close_mask", "WarpSampler", "WarpSamplerConfig", "WarpParams", "masks_from_params",
           "apply_mapper", "MAPPERS", "DIVERGENCE_LEVELS"]

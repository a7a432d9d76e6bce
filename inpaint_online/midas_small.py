"""Moved to :mod:`inpaint_online.depth.midas_small`; kept so that old imports work."""

from .depth.midas_small import MidasSmall, load_midas_small

__all__ = ["MidasSmall", "load_midas_small"]

#!/usr/bin/env python
"""Estimate depth once over raw media and cache it for online training (see README)."""
import sys

from inpaint_online.cache.cli import main

if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Train a disocclusion inpainting model on hole masks made online from the depth cache
(``python train_online.py --help``; the command is :mod:`inpaint_online.train.cli`)."""
import sys

from inpaint_online.train.cli import main

if __name__ == "__main__":
    sys.exit(main())

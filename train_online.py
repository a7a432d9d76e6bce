#!/usr/bin/env python
"""Train a disocclusion inpainting model from the depth cache, with masks made on the fly.

Not built yet: the streaming trainer is tracked in its own issue. This entry point exists so
that scripts and docs can name it; it prints its planned interface and exits with status 2.
"""
import argparse
import sys


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="train_online.py",
        description="Train an image/video inpainting model on masks made online from the "
                    "depth cache (not built yet).")
    ap.add_argument("--config", help="YAML config (configs/*.yaml)")
    ap.add_argument("--resume", action="store_true", help="resume from the run's last checkpoint")
    ap.add_argument("--export-dir", help="write the generated pairs to DIR instead of training")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    ap.parse_args(argv)
    print("train_online.py: training is not built yet (see the open issue 'train_online.py'). "
          "The warp core (inpaint_online.warp) and the depth cache (precompute_depth.py) work.",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

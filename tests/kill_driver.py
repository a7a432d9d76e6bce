"""Runs precompute_depth.py or train_online.py --export-dir in a child process for the SIGKILL
tests: imports everything first, prints 'ready', then works (so a kill lands in the work).

fsync is slowed down as on a busy disk, so that kills often land while a temp file or a
manifest line is half done: the windows the resume has to clean up after."""
import os
import sys
import time
from pathlib import Path

_fsync = os.fsync


def slow_fsync(fd):
    time.sleep(0.02)
    _fsync(fd)


os.fsync = slow_fsync

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

mode, args = sys.argv[1], sys.argv[2:]
if mode == "precompute":
    from inpaint_online.cache.cli import main
else:
    import inpaint_online.export  # noqa: F401  (the export's imports, before 'ready')
    import inpaint_online.train  # noqa: F401
    from train_online import main
print("ready", flush=True)
sys.exit(main(args))

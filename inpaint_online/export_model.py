"""Save a trained iw3 network as the nunif model file iw3 loads (docs/iw3.md).

    python -m inpaint_online.export_model --checkpoint runs/iw3_light/checkpoints/best.pt \\
        --out models/my_inpaint.pth --name my_inpaint

The checkpoint must be of ``model.kind: iw3_light_inpaint_v1`` or
``iw3_light_video_inpaint_v1`` (``best_ema.pt`` holds the EMA weights). Prints the lines to
add to ``iw3/inpaint_models.yml`` in the nunif checkout, and the iw3 command that uses them.
The file loads back here too: ``stereo``/``inpaint``/``compare --checkpoint FILE``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from .errors import show
from .fsutil import check_output_file
from .iw3net import NunifFileError, save_nunif_model, yml_lines
from .models import IW3_KINDS

__all__ = ["main", "export_model"]


def export_model(checkpoint: str | Path, out: str | Path) -> tuple[Path, str]:
    """Write ``checkpoint``'s model as a nunif model file at ``out``; ``(path, nunif name)``."""
    from .inference import load_model
    data = read_checkpoint(checkpoint)
    ck = load_checkpoint(checkpoint, data=data)
    kind = ck.get("model_config", {}).get("kind")
    if kind not in IW3_KINDS:
        raise NunifFileError(f"{show(checkpoint)}: model.kind {kind!r} is not one of iw3's "
                             f"architectures ({', '.join(IW3_KINDS)}): iw3 cannot run it; train "
                             "with configs/iw3_light_inpaint.yaml or configs/iw3_light_video_inpaint.yaml")
    model = load_model(checkpoint, data=data)
    cfg = ck.get("config", {})
    train_kwargs = {"trainer": "inpaint_online", "checkpoint": str(Path(checkpoint).resolve()),
                    "step": ck.get("step"), "config": cfg}
    path = save_nunif_model(model, out, train_kwargs=train_kwargs)
    return path, model.nunif_name


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m inpaint_online.export_model", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="best.pt / best_ema.pt / last.pt of a run")
    ap.add_argument("--out", required=True, help="the model file to write (.pth)")
    ap.add_argument("--name", default=None,
                    help="the name for inpaint_models.yml and --inpaint-model (default: --out's stem)")
    args = ap.parse_args(argv)
    try:
        check_output_file(args.out, image=False)
        path, nunif_name = export_model(args.checkpoint, args.out)
    except (CheckpointError, NunifFileError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    name = args.name or path.stem
    key = "video" if "video" in nunif_name else "image"
    print(f"wrote {show(path)} ({nunif_name}, nunif model file)")
    print("add to iw3/inpaint_models.yml in your nunif checkout (or $NUNIF_HOME/iw3/):\n")
    print(yml_lines(name, **{key: path}))
    other = "image" if key == "video" else "video"
    print(f"\n(an entry without {other}: iw3 uses its default {other} model for it)")
    print(f"then: python -m iw3.cli -i INPUT -o OUTPUT --method forward_inpaint --inpaint-model {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

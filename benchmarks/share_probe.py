"""Where a dual model (``model.prefill: dual``) loses on rendered stereo pairs: its share of
the background fill, or its correction?

For each pair of ``--pairs`` (``benchmarks/render_pairs.py``), PSNR in the scored holes of:
the model as trained; the model with its share forced to 1 (the background push-pull fill
plus the model's correction); and the background push-pull fill alone (share 1, no
correction: what a perfect share with a zero correction gives). Also the mean share the
model gives the background fill in the scored holes. ``--depth-scale s`` hands the model
the depth scaled by s (nearest object at s instead of 1): how much the model's choice
depends on where the near side sits in the range (the fills themselves do not change).

    python benchmarks/share_probe.py --checkpoint runs/part3/cq_near/checkpoints/best.pt \\
        --pairs runs/pairs_wide
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inpaint_online.checkpoint import CheckpointError  # noqa: E402
from inpaint_online.evaluate_stereo import evaluate_pair, find_pairs, read_pair  # noqa: E402
from inpaint_online.inference import inpaint, load_model  # noqa: E402
from inpaint_online.media import MediaError  # noqa: E402
from inpaint_online.models import over_max  # noqa: E402

MODES = ("as trained", "share 1", "background fill alone")


def probe(model, pair, depth_scale: float = 1.0) -> dict:
    """PSNR in the scored holes for each of :data:`MODES` (scored by
    :func:`~inpaint_online.evaluate_stereo.evaluate_pair`), and the mean share."""
    state = {"mode": MODES[0], "share": None}

    def hook(_module, _inputs, out):
        state["share"] = torch.sigmoid(out[:, 3:4].detach())
        if state["mode"] == MODES[0]:
            return out
        out = out.clone()
        out[:, 3:4] = 30.0                      # sigmoid(30) = 1 in float32
        if state["mode"] == MODES[2]:
            out[:, :3] = 0
        return out

    def fill(mode):
        def run(x, mask, disparity):
            state["mode"] = mode
            depth = depth_scale * over_max(disparity)
            out = inpaint(model, x, mask, depth)
            if mode == MODES[0]:
                shares.append(state["share"][..., :mask.shape[-2], :mask.shape[-1]])
            return out
        return run

    shares = []
    handle = model.head.register_forward_hook(hook)
    try:
        res = evaluate_pair(pair, {mode: fill(mode) for mode in MODES})
    finally:
        handle.remove()
    scored = res["_pictures"][2]
    return {**{m: res["methods"][m]["psnr"] for m in MODES}, "share": float(shares[0][scored].mean())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--pairs", required=True, help="a folder of pairs (benchmarks/render_pairs.py)")
    ap.add_argument("--depth-scale", type=float, default=1.0)
    args = ap.parse_args(argv)
    try:
        model = load_model(args.checkpoint)
    except CheckpointError as e:           # its message names the file
        print(e, file=sys.stderr)
        return 2
    if getattr(model, "dual", False) is not True:
        print(f"{args.checkpoint}: not a model given both fills (model.prefill dual): nothing to probe",
              file=sys.stderr)
        return 2
    if not 0 < args.depth_scale <= 1:
        print(f"--depth-scale must be in (0, 1], got {args.depth_scale}", file=sys.stderr)
        return 2
    try:
        pairs, problems = find_pairs(args.pairs)
    except MediaError as e:
        print(e, file=sys.stderr)
        return 2
    for p in problems:
        print(p, file=sys.stderr)
    if not pairs:
        print(f"{args.pairs}: no pairs", file=sys.stderr)
        return 2
    rows = []
    print(f"{'pair':<20}" + "".join(f"{m:>22}" for m in MODES) + f"{'mean share':>12}")
    for name, left, right, disp in pairs:
        r = probe(model, read_pair(left, right, disp), args.depth_scale)
        rows.append(r)
        print(f"{name:<20}" + "".join(f"{r[m]:>22.2f}" for m in MODES) + f"{r['share']:>12.2f}")
    print(f"{'mean':<20}" + "".join(f"{np.mean([r[m] for r in rows]):>22.2f}" for m in MODES)
          + f"{np.mean([r['share'] for r in rows]):>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""iw3's light inpainting networks here against nunif's own code (issue 25, docs/iw3.md).

    python benchmarks/iw3_model_parity.py --nunif /path/to/nunif
    python benchmarks/iw3_model_parity.py --nunif /path/to/nunif --dump-shapes tests/data/iw3_model_params.json

``--nunif``: a nunif checkout (or ``git archive HEAD iw3 nunif`` of one); its models import
with this project's torch. For each architecture: this project's model (random weights,
seeded) is written with ``save_nunif_model``; nunif's ``load_model`` reads the file (as iw3
does: ``weights_only=True``) and builds its own model; both fill the same real photo with
real warp holes, and the script prints the largest difference of the outputs — iw3's
``infer`` (whole frame) and its training forward (``i2i_offset`` cropped) against this
project's ``forward`` and its 16-px inner part. Bar: <= 1e-5 in fp32. Then the file is read
back here (``load_nunif_model``) and must give the same output bit for bit.

``--dump-shapes``: writes every parameter's name and shape of nunif's two models (the list
``tests/test_iw3net.py`` checks this project's models against, without a nunif checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inpaint_online.bundled import photo_depth, real_image  # noqa: E402
from inpaint_online.iw3net import (  # noqa: E402
    SEQ_LEN,
    LightInpaintV1,
    LightVideoInpaintV1,
    inner,
    load_nunif_model,
    save_nunif_model,
)
from inpaint_online.warp import WarpSampler, WarpSamplerConfig, masks_from_params  # noqa: E402

NAMES = {"inpaint.light_inpaint_v1": LightInpaintV1,
         "inpaint.light_video_inpaint_v1": LightVideoInpaintV1}


def import_nunif(root: Path):
    os.environ.setdefault("NUNIF_HOME", tempfile.mkdtemp(prefix="nunif_home_"))
    sys.path.insert(0, str(root))
    import iw3.models.light_inpaint_v1  # noqa: F401  (registers the models)
    import iw3.models.light_video_inpaint_v1  # noqa: F401
    from nunif.models import create_model, load_model
    return create_model, load_model


def inputs(frames: int, size=(200, 264)) -> tuple[torch.Tensor, torch.Tensor]:
    """A bundled photo (shifted a little per frame) and the holes of a real warp of its depth."""
    img = real_image("astronaut.png")
    depth = photo_depth("astronaut.png")
    h, w = size
    xs, ds = [], []
    for t in range(frames):
        xs.append(img[..., 100:100 + h, 80 + 2 * t:80 + 2 * t + w])
        ds.append(depth[..., 100:100 + h, 80 + 2 * t:80 + 2 * t + w])
    x, d = torch.cat(xs), torch.cat(ds)
    n = x.shape[0]
    p = WarpSampler(WarpSamplerConfig.level(3)).sample(n, torch.full((n,), float(w)),
                                                       torch.Generator().manual_seed(1))
    mask = masks_from_params(d, p).float()
    return x, mask


def compare(name: str, create_model, load_model, tmp: Path) -> list[str]:
    torch.manual_seed(0)
    ours = NAMES[name]().eval()
    path = save_nunif_model(ours, tmp / f"{name}.pth", train_kwargs={"by": "iw3_model_parity"})
    theirs, meta = load_model(str(path), weights_only=True)
    theirs.eval()
    frames = SEQ_LEN if "video" in name else 2
    x, mask = inputs(frames)
    lines = [f"{name:<34} {frames} frames of {x.shape[-1]}x{x.shape[-2]}, holes "
             f"{mask.mean().item():.1%} of the pixels"]
    with torch.no_grad():
        a = ours(x, mask)
        xin, min_ = theirs.preprocess(x, mask)
        b = theirs(xin, min_, skip_i2i_offset=True)
        c = theirs.infer(x, mask)
        lines.append(f"{'':<34} whole frame (infer)      max |ours - nunif| = "
                     f"{(a - c).abs().max().item():.2e}  ({(a - b).abs().max().item():.2e} "
                     "forward on preprocessed)")
        ours.train()
        theirs.train()
        a_t = inner(ours(x, mask), 16)
        b_t = theirs(*theirs.preprocess(x, mask))
        lines.append(f"{'':<34} training forward, inner   max |ours - nunif| = "
                     f"{(a_t - b_t).abs().max().item():.2e}  (shape {tuple(b_t.shape)})")
        ours.eval()
        back, _ = load_nunif_model(path)
        same = torch.equal(back(x, mask), a)
        lines.append(f"{'':<34} read back here: {'bit-identical' if same else 'DIFFERENT'}; "
                     f"file name={meta['name']!r} kwargs={meta['kwargs']}")
        # the check can fail: one weight changed by 1e-3 moves the output far above the bar
        sd = {k: v.clone() for k, v in ours.state_dict().items()}
        sd["mask_bias"] += 1e-3
        ours.load_state_dict(sd)
        moved = (ours(x, mask) - c).abs().max().item()
        lines.append(f"{'':<34} (control: mask_bias + 1e-3 gives {moved:.2e})")
        worst = max((a - c).abs().max().item(), (a_t - b_t).abs().max().item())
        lines.append(f"{'':<34} {'PASS' if worst <= 1e-5 and same else 'FAIL'} (bar 1e-5)")
    return lines


def dump_shapes(create_model, out: Path) -> None:
    shapes = {}
    for name in NAMES:
        m = create_model(name)
        shapes[name] = {"kwargs": m.get_kwargs(),
                        "params": {k: list(v.shape) for k, v in m.state_dict().items()}}
    out.write_text(json.dumps(shapes, indent=1) + "\n")
    print(f"wrote {out}: " + ", ".join(f"{k} {len(v['params'])} tensors" for k, v in shapes.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nunif", required=True, help="a nunif checkout or archive of iw3/ and nunif/")
    ap.add_argument("--dump-shapes", help="write nunif's parameter names and shapes here")
    args = ap.parse_args(argv)
    root = Path(args.nunif)
    if not (root / "nunif" / "models").is_dir() or not (root / "iw3" / "models").is_dir():
        print(f"{root}: not a nunif checkout (no nunif/models or iw3/models)", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    create_model, load_model = import_nunif(root)
    if args.dump_shapes:
        dump_shapes(create_model, Path(args.dump_shapes))
        return 0
    print(f"iw3_model_parity: {platform.machine()}, torch {torch.__version__}, fp32, CPU")
    bad = False
    with tempfile.TemporaryDirectory() as tmp:
        for name in NAMES:
            for line in compare(name, create_model, load_model, Path(tmp)):
                print(line)
                bad |= line.strip().startswith("FAIL")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

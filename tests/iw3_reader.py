"""A reader of exported datasets written from the facts of iw3's inpainting trainer (nunif
``iw3/training/inpaint/dataset.py`` and ``dataset_video.py``), not from our exporter: every
export the tests make must pass it.

Facts it encodes:
* the trainer reads ``DATA/train`` and ``DATA/eval``;
* image data: the image files of a split folder (not recursive); every ``*_M.png`` is paired
  with the file named by replacing ``_M.png`` with ``_C.png`` (missing → error); masks are
  read as gray and ``> 0`` is a hole; other files (``_I.png``, ``index.jsonl``) are ignored;
  every sample is cropped to 256 x 256, so both sides must be at least 256;
* video data: every folder of a split (``os.listdir`` + ``isdir``, hidden ones included) is
  a clip whose ``*_M.png``/``*_C.png`` pairs are its frames; it needs at least 12;
* eval runs in batches of 8 with ``drop_last``: fewer than 8 samples give no batch (and a
  ZeroDivisionError).
"""
import os
from pathlib import Path

from PIL import Image

IMG_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
SIZE, SEQ, EVAL_BATCH = 256, 12, 8


def list_images(d: Path) -> list[str]:
    return sorted(str(d / f) for f in os.listdir(d) if os.path.splitext(f)[-1].lower() in IMG_EXTENSIONS)


def pairs(d: Path) -> list[tuple[str, str]]:
    masks = [f for f in list_images(d) if f.endswith("_M.png")]
    out = []
    for m in masks:
        c = m.replace("_M.png", "_C.png")
        assert os.path.exists(c), f"{c} not found (iw3 raises RuntimeError)"
        out.append((c, m))
    return out


def check_pair(c: str, m: str) -> None:
    with Image.open(c) as ic, Image.open(m) as im:
        assert ic.size == im.size, f"{c}: {ic.size} but its mask {im.size}"
        assert min(ic.size) >= SIZE, f"{c}: {ic.size} is smaller than iw3's {SIZE} px crop"


def read_export(root) -> dict:
    """Counts ``{split: samples}`` of an export iw3's trainer can read; AssertionError naming
    the first thing it would fail on."""
    root = Path(root)
    counts = {}
    for split in ("train", "eval"):
        d = root / split
        assert d.is_dir(), f"{d}: missing (iw3 needs train/ and eval/)"
        folders = [d / f for f in os.listdir(d) if os.path.isdir(d / f)]
        images = pairs(d)
        assert not (folders and images), f"{d}: holds both image samples and clip folders"
        if folders:
            for f in folders:
                frames = pairs(f)
                assert len(frames) >= SEQ, f"Invalid data: {f}: {len(frames)} files (iw3 needs {SEQ})"
                for c, m in frames:
                    check_pair(c, m)
            counts[split] = len(folders)
        else:
            for c, m in images:
                check_pair(c, m)
            counts[split] = len(images)
    assert counts["train"] > 0, f"{root}/train is empty"
    assert counts["eval"] >= EVAL_BATCH, (f"{root}/eval: {counts['eval']} samples, fewer than one "
                                          f"eval batch of {EVAL_BATCH}")
    return counts

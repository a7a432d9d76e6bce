"""Check a depth cache's maps against their records, and repair the broken ones from their
sources (``precompute_depth.py --verify [--repair]``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..depth import DepthBackend
from ..errors import ConfigError, one_line, show
from . import pipeline
from .fill import FillJob, Task, compact_manifest, prepare_cache_dir
from .pipeline import Progress
from .store import (
    RGB_FORMATS,
    CacheIntegrityError,
    Manifest,
    ManifestWriter,
    Sampling,
    Summary,
    load_cached_depth,
    load_cached_rgb,
)

__all__ = ["verify", "VerifyReport"]


@dataclass
class VerifyReport:
    checked: int = 0
    legacy: int = 0                                   # records without a checksum
    broken: list[tuple[dict, str]] = field(default_factory=list)
    repaired: int = 0
    unrepaired: list[tuple[dict, str]] = field(default_factory=list)

    def table(self) -> str:
        out = ["", "  precompute_depth --verify", "  " + "-" * 34,
               f"  {'maps checked':<24}{self.checked:>10}",
               f"  {'broken':<24}{len(self.broken):>10}",
               f"  {'repaired':<24}{self.repaired:>10}"]
        if self.legacy:
            out.append(f"  {'without checksum':<24}{self.legacy:>10}  (made by an older "
                       "version: only decoded)")
        def where(rec):
            return show(rec["source"]) + ("" if rec.get("frame") is None else f" frame {rec['frame']}")
        for rec, why in self.broken:
            out.append(f"  BROKEN {where(rec)} ({rec['depth_file']}): {why}")
        for rec, why in self.unrepaired:
            out.append(f"  NOT REPAIRED {where(rec)}: {why}; entry removed")
        if self.broken and not self.repaired and not self.unrepaired:
            out.append("  run again with --repair to recompute them from their sources")
        return "\n".join(out)


def verify(cache_dir: str | Path, *, backend: DepthBackend | None = None, batch_size: int = 8,
           progress: bool = True) -> VerifyReport:
    """Check every cached map against its manifest record (size, CRC-32, decodable, shape).
    With a ``backend``: recompute the broken ones from their sources (a repair); an entry
    whose source cannot be read any more is removed and listed."""
    root = Path(cache_dir)
    if not root.is_dir():
        raise ConfigError(f"{show(root)}: no depth cache here (not a folder)")
    manifest = Manifest(root)
    report = VerifyReport()
    for rec in tqdm(manifest.samples(), desc="verify", unit="map", disable=not progress,
                    dynamic_ncols=True):
        report.checked += 1
        report.legacy += "depth_crc32" not in rec
        why = _problem(root, rec, "depth", load_cached_depth)
        if why is None and "rgb_file" in rec:
            why = _problem(root, rec, "rgb", load_cached_rgb)
            why = None if why is None else f"RGB {rec['rgb_file']}: {why}"
        if why is not None:
            report.broken.append((rec, why))
    if backend is None or not report.broken:
        return report
    sig = {"backend": backend.name, "backend_settings": backend.settings()}
    other = {(r["backend"], json.dumps(r["backend_settings"], sort_keys=True))
             for r, _ in report.broken if (r["backend"], r["backend_settings"]) != tuple(sig.values())}
    if other:
        name, settings = sorted(other)[0]
        raise ConfigError(f"the broken maps were made with depth backend {name!r} {settings}, "
                          f"not {sig['backend']!r} {json.dumps(sig['backend_settings'], sort_keys=True)}: "
                          "run --repair with the backend options of the cache")
    prepare_cache_dir(root)
    writer = ManifestWriter(root, None)
    try:
        by_source: dict[str, list[dict]] = {}
        for rec, _ in report.broken:
            by_source.setdefault(rec["source"], []).append(rec)
        jobs: dict[tuple, list] = {}
        for source, recs in by_source.items():
            r0 = recs[0]
            rgb_fmt = next((f for f, suffix in RGB_FORMATS.items()
                            if r0.get("rgb_file", "").endswith("." + suffix)), None)
            sig = (_max_size_of(r0), Path(r0["depth_file"]).suffix[1:], "sha256" in r0["fingerprint"],
                   rgb_fmt)
            spans = None
            if r0["kind"] == "video":
                spans = {r["frame"]: (r["depth_norm"]["lo"], r["depth_norm"]["hi"]) for r in recs
                         if r.get("depth_norm", {}).get("mode") == "clip"}
            task = Task(Path(source), r0["rel"],
                        None if r0["kind"] == "image" else [(r["frame"], r.get("clip")) for r in recs],
                        spans)
            jobs.setdefault(sig, []).append((task, recs))
        for (max_size, fmt, with_hash, rgb_fmt), items in jobs.items():
            summary = Summary()
            job = FillJob(root, backend, writer, manifest, max_size, fmt, with_hash, summary,
                          force={r["key"] for _, recs in items for r in recs}, rgb_fmt=rgb_fmt)
            tasks = [t for t, _ in items]
            pipeline.run(job, tasks, Sampling(), batch_size, 0, Progress(len(tasks), enabled=False))
            errors = dict(summary.errors)                 # one error at most per source
            for task, recs in items:
                why = errors.get(str(task.path))
                if why is None:
                    report.repaired += len(recs)
                    continue
                for r in recs:       # report, remove the entry (its error record is written)
                    manifest.remove_files(r)
                    writer.append({"key": r["key"], "source": r["source"], "deleted": True})
                    report.unrepaired.append((r, why))
        compact_manifest(root, writer)
    finally:
        writer.finish()    # also when the repair fails: the next run may write
    return report


def _max_size_of(rec: dict) -> int | None:
    """The ``max_size`` that gives a record's stored size from its source size."""
    sw, sh = rec["src_size"]
    dw, dh = rec["depth_size"]
    return None if (dw, dh) == (sw, sh) else max(dw, dh)


def _problem(root: Path, rec: dict, kind: str, load) -> str | None:
    """What is wrong with a record's ``kind`` file, or None."""
    try:
        load(root, rec)
    except CacheIntegrityError as e:
        return str(e)
    except OSError as e:
        return "missing" if isinstance(e, FileNotFoundError) else one_line(
            f"cannot read ({e.strerror or e})")
    return None

"""The precompute pipeline: decode and resize in DataLoader workers, the model on batches
across files, normalising and writing in a thread.

::

    workers (CPU)                 main process (device)            writer thread
    decode + backend.prepare  ->  buckets by input size ->  infer  ->  normalise, store,
    one source after another      a batch when a bucket is full        manifest, progress

The model never waits on decoding while the workers keep up (``benchmarks/bench_depth.py``
prints how long it waited), and never on writing (the writer thread has its own queue).
Every source has its own error boundary in each stage: a file that fails to decode, a batch
the model fails on (each of its files is then retried alone) or a map that cannot be written
gives that file one error record, and the run goes on.
"""

from __future__ import annotations

import errno
import logging
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Hashable

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import one_line
from ..media import failure_reason


@dataclass
class Stats:
    """Where the main process spent its time (seconds)."""
    model: float = 0.0        # in backend.infer
    wait_decode: float = 0.0  # waiting for the workers
    wait_write: float = 0.0   # waiting for room in the writer's queue
    total: float = 0.0

    def busy(self) -> float:
        """The fraction of the time the model was computing."""
        return self.model / self.total if self.total > 0 else 0.0


@dataclass
class Chunk:
    """Up to a batch of one source's frames for the depth model: ``frames`` as ``(frame,
    clip start)``, the group (clip) they belong to and its size, the backend's request and
    prepared input ``(bucket key, array)``, and their stored RGB (None without)."""
    frames: list
    group: int
    group_n: int
    request: object                # the backend's DepthRequest
    prepared: tuple
    rgb: list | None


@dataclass
class RgbOnly:
    """Stored RGB for frames whose depth is cached and current (keys in order)."""
    keys: list
    rgb: list


class _Sources(IterableDataset):
    """Worker ``k`` of ``n`` plans sources ``k, k+n, …``: for each, the chunks to compute,
    then one ``end`` item (what was skipped, refreshed records, the error if any)."""

    def __init__(self, job, tasks, sampling, batch_size):
        self.job, self.tasks, self.sampling, self.batch_size = job, tasks, sampling, batch_size

    def __iter__(self):
        info = get_worker_info()
        ids = range(len(self.tasks)) if info is None else range(info.id, len(self.tasks), info.num_workers)
        for i in ids:
            task = self.tasks[i]
            st = {"kind": None, "skipped": 0, "fresh": [], "error": None}
            try:
                for item in self.job.plan(task, self.sampling, self.batch_size, st):
                    if isinstance(item, RgbOnly):
                        yield {"t": "rgb", "src": i, "keys": item.keys, "rgb": item.rgb}
                        continue
                    key, x = item.prepared
                    # a tensor crosses to the main process through shared memory
                    meta = {k: st[k] for k in ("kind", "fp", "size", "src_wh")}
                    yield {"t": "chunk", "src": i, "key": key,
                           "x": torch.from_numpy(np.ascontiguousarray(x)), "frames": item.frames,
                           "group": item.group, "group_n": item.group_n, "meta": meta,
                           "rgb": item.rgb}
            except Exception as e:   # noqa: BLE001 - the per-file backstop: report, go on
                st["error"] = failure_reason(e, task.path)
            yield {"t": "end", "src": i, "st": st}


def _identity(item):
    return item


@dataclass
class _Chunk:
    src: int
    key: Hashable
    x: torch.Tensor
    frames: list
    group: int
    group_n: int
    meta: dict                                      # kind, fp, size, src_wh of the source
    rgb: list | None = None                         # the frames' stored RGB (encoded)
    given: int = 0                                  # frames handed to the model so far
    raws: list = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.frames)


class DiskFull(OSError):
    """The cache's disk is full: the run stops at the first failed write (every later file
    would fail the same way), naming the folder."""


def _stop_if_disk_full(e: BaseException, root) -> None:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        raise DiskFull(e.errno, "no space left on its device: stopped at the first failed "
                       "write; free some space and run the same command again (what was "
                       "written is kept)", str(root)) from None


class _Writer(threading.Thread):
    """Normalises and stores finished groups, appends the manifest and reports progress, in
    the order each source's items came; a source ends after its last chunk."""

    def __init__(self, job, tasks, progress):
        super().__init__(name="depth-writer", daemon=True)
        self.job, self.tasks, self.progress = job, tasks, progress
        self.q: queue.Queue = queue.Queue(maxsize=16)
        self.state: dict[int, dict] = {}
        self.files = 0
        self.exc: BaseException | None = None

    def put(self, msg) -> None:
        self.q.put(msg)

    def run(self) -> None:
        while (msg := self.q.get()) is not None:
            if self.exc is None:
                try:
                    self._handle(*msg)
                except BaseException as e:   # noqa: BLE001 - e.g. the manifest's disk is full
                    self.exc = e             # main raises it; keep draining so it never blocks

    def _src(self, i: int) -> dict:
        return self.state.setdefault(i, {"handled": 0, "end": None, "failed": None, "groups": {}})

    def _handle(self, what: str, i: int, payload) -> None:
        s = self._src(i)
        if what == "end":
            s["end"] = payload
        elif what == "rgb":                        # RGB for frames whose depth is current
            if s["failed"] is None:
                try:
                    for key, data in zip(*payload):
                        self.job.add_rgb(key, data)
                except Exception as e:   # noqa: BLE001 - an RGB that cannot be stored
                    _stop_if_disk_full(e, self.job.root)
                    s["failed"] = failure_reason(e, self.tasks[i].path)
        elif what == "fail":                       # the model failed on this source's chunk
            s["handled"] += 1
            s["failed"] = s["failed"] or payload
            s["groups"].clear()
        else:                                      # a chunk with all its raw maps
            ch: _Chunk = payload
            s["handled"] += 1
            if s["failed"] is None:
                g = s["groups"].setdefault(ch.group, ([], [], []))
                g[0].extend(ch.raws)
                g[1].extend(ch.frames)
                g[2].extend(ch.rgb or [None] * ch.n)
                if len(g[1]) == ch.group_n:
                    del s["groups"][ch.group]
                    try:
                        self.job.finish(self.tasks[i], ch.meta, g[0], g[1], g[2])
                    except Exception as e:   # noqa: BLE001 - a map that cannot be stored
                        _stop_if_disk_full(e, self.job.root)
                        s["failed"] = failure_reason(e, self.tasks[i].path)
                        s["groups"].clear()
        end = s["end"]
        if end is not None and s["handled"] == end["n_chunks"]:
            st = end["st"]
            self.job.summary.images += st["kind"] == "image"
            self.job.summary.videos += st["kind"] == "video"
            self.job.summary.skipped += st["skipped"]
            for rec in st["fresh"]:
                self.job.refresh(rec)
            why = st["error"] or s["failed"]
            if why:
                self.job.error(self.tasks[i].path, why, st.get("kind"))
            del self.state[i]
            self.files += 1
        self.progress.update(self.files, self.job.summary.computed, len(self.job.summary.errors),
                             per_frame=self.job.summary.per_frame())


def loader(job, tasks, sampling, batch_size: int, workers: int) -> DataLoader:
    """The items of :class:`_Sources` from ``workers`` processes (0: the calling one)."""
    if workers and not sys.platform.startswith("linux"):
        # the workers inherit the job by fork; elsewhere it would be pickled (open files)
        logging.getLogger(__name__).warning("--workers %d: decoding workers need Linux (fork); "
                                            "decoding in the main process", workers)
        workers = 0
    return DataLoader(_Sources(job, tasks, sampling, batch_size), batch_size=None,
                      num_workers=workers, collate_fn=_identity,
                      prefetch_factor=4 if workers else None,
                      # the workers inherit the job (manifest, backend) instead of a pickle
                      # of it: fork, whatever start method the caller's process set
                      multiprocessing_context="fork" if workers else None)


def run(job, tasks, sampling, batch_size: int, workers: int, progress,
        hold: int | None = None) -> Stats:
    """Compute and store the depth of ``tasks`` (see the module docstring). Inputs waiting
    in partly filled buckets are held up to ``hold`` frames (default 4 batches): beyond, the
    fullest bucket runs as it is, so photos of many aspect ratios (one bucket each) cannot
    pile up in memory."""
    hold = 4 * batch_size if hold is None else hold
    stats = Stats()
    t0 = time.perf_counter()
    it = iter(loader(job, tasks, sampling, batch_size, workers))
    # (the workers fork at iter(), before the writer thread starts)
    writer = _Writer(job, tasks, progress)
    writer.start()
    buckets: dict[Hashable, deque] = {}
    pending: dict[Hashable, int] = {}
    received: dict[int, int] = {}

    def send(msg):
        t = time.perf_counter()
        writer.put(msg)
        stats.wait_write += time.perf_counter() - t
        if writer.exc is not None:
            raise writer.exc

    def batch(key) -> None:
        """One model pass over up to ``batch_size`` frames of a bucket (a chunk may be split
        across two passes); a failed pass is retried per chunk, so one bad file fails alone."""
        b, pieces, n = buckets[key], [], batch_size
        while n > 0 and b:
            ch = b[0]
            k = min(n, ch.n - ch.given)
            pieces.append((ch, ch.given, ch.given + k))
            ch.given += k
            n -= k
            if ch.given == ch.n:
                b.popleft()
        pending[key] -= batch_size - n
        t = time.perf_counter()
        try:
            x = torch.cat([c.x[a:z] for c, a, z in pieces])
            m = len(x)
            if m < batch_size:
                # every pass has the same shape: a frame's map then does not depend on which
                # frames (of which files, workers, ranks) happened to share its pass — CPU
                # kernels round differently for other batch sizes
                x = torch.cat([x, x[-1:].expand(batch_size - m, *x.shape[1:])])
            raws = np.split(job.backend.infer(x, key)[:m],
                            np.cumsum([z - a for _, a, z in pieces])[:-1])
        except Exception:   # noqa: BLE001 - find the chunk(s) the model fails on
            raws = []
            for c, a, z in pieces:
                try:
                    raws.append(job.backend.infer(c.x[a:z], key))
                except Exception as e:   # noqa: BLE001
                    raws.append(f"depth model failed ({type(e).__name__}: {one_line(e)})")
        stats.model += time.perf_counter() - t
        for (c, a, z), r in zip(pieces, raws):
            if isinstance(r, str):
                if c.given < c.n:                         # drop the rest of the chunk
                    buckets[key].remove(c)
                    pending[key] -= c.n - c.given
                c.x, c.raws = None, []
                send(("fail", c.src, r))
                continue
            c.raws.append(np.asarray(r, np.float32))
            if sum(len(x) for x in c.raws) == c.n:
                c.x = None                                # free the input early
                send(("chunk", c.src, c))

    try:
        while True:
            t = time.perf_counter()
            item = next(it, None)
            stats.wait_decode += time.perf_counter() - t
            if item is None:
                break
            i = item["src"]
            if item["t"] == "end":
                send(("end", i, {"st": item["st"], "n_chunks": received.pop(i, 0)}))
                continue
            if item["t"] == "rgb":
                send(("rgb", i, (item["keys"], item["rgb"])))
                continue
            received[i] = received.get(i, 0) + 1
            key = item["key"]
            buckets.setdefault(key, deque()).append(_Chunk(i, key, item["x"], item["frames"],
                                                           item["group"], item["group_n"],
                                                           item["meta"], item["rgb"]))
            pending[key] = pending.get(key, 0) + len(item["frames"])
            while pending[key] >= batch_size:
                batch(key)
            while sum(pending.values()) > hold:
                batch(max(pending, key=pending.get))
        for key in list(buckets):
            while pending[key] > 0:
                batch(key)
    finally:
        writer.put(None)
        writer.join()
        progress.close(writer.files, job.summary.computed, len(job.summary.errors))
    if writer.exc is not None:
        raise writer.exc
    stats.total = time.perf_counter() - t0
    return stats


class Progress:
    """One line a person can read for a million files: files done of all, frames computed
    and frames/s, errors, elapsed and ETA (from the files' rate). On a terminal it is
    rewritten in place twice a second; in a log a new line every ``every`` seconds (30)."""

    def __init__(self, total: int, *, label: str = "depth", stream=None, enabled: bool = True,
                 every: float | None = None, clock=time.monotonic):
        self.total, self.label, self.enabled, self.clock = total, label, enabled, clock
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every if every is not None else (0.5 if self.tty else 30.0)
        self.t0 = self.last = clock()
        self.width = 0
        self.per_frame = None

    def line(self, files: int, frames: int, errors: int, per_frame: float | None = None) -> str:
        el = max(self.clock() - self.t0, 1e-9)
        pct = 100.0 * files / self.total if self.total else 100.0
        eta = _hms((self.total - files) * el / files) if files else "?"
        size = f" | {per_frame / 1024:.0f} KiB/frame" if per_frame else ""
        return (f"{self.label}: {files:,}/{self.total:,} files ({pct:.1f}%) | {frames:,} frames, "
                f"{frames / el:.1f} frames/s{size} | {errors:,} error{'s' * (errors != 1)} | "
                f"elapsed {_hms(el)}, ETA {eta}")

    def update(self, files: int, frames: int, errors: int, force: bool = False,
               per_frame: float | None = None) -> None:
        now = self.clock()
        if not self.enabled or (not force and now - self.last < self.every):
            return
        self.last = now
        self.per_frame = per_frame if per_frame is not None else self.per_frame
        text = self.line(files, frames, errors, self.per_frame)
        if self.tty:
            self.stream.write("\r" + text.ljust(self.width))
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self, files: int, frames: int, errors: int) -> None:
        self.update(files, frames, errors, force=True)
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h}:{m:02d}:{s:02d}"

"""Overlapping the collate with the training step (timm's PrefetchLoader pattern): on CUDA the
next batch is copied and collated on a side stream one batch ahead (docs/design.md,
"stream": no host sync in the collate)."""

from __future__ import annotations

import time

import torch

from .collate import WarpCollate

__all__ = ["Prefetcher"]


class Prefetcher:
    """Iterates a DataLoader and yields ``(Batch, data_wait_seconds)`` from ``start_step`` on.

    On CUDA the next batch is copied and collated on a side stream while the current step
    trains; ``data_wait`` is the host time spent blocked on the loader. On CPU the collate
    runs inline and is counted as data time too (it competes with the step for the cores).
    """

    def __init__(self, loader, collate: WarpCollate, start_step: int = 0):
        self.loader, self.collate, self.step = loader, collate, start_step
        self.cuda = collate.device.type == "cuda"
        self.stream = torch.cuda.Stream(collate.device) if self.cuda else None
        self._it = None
        self._next = None

    def _fetch(self):
        t0 = time.perf_counter()
        cpu = next(self._it)
        if self.cuda:
            wait = time.perf_counter() - t0
            with torch.cuda.stream(self.stream):
                b = self.collate(cpu, self.step)
        else:
            b = self.collate(cpu, self.step)
            wait = time.perf_counter() - t0
        self.step += 1
        return b, wait

    def __iter__(self):
        self._it = iter(self.loader)
        if self.cuda:
            self._next = self._fetch()
        return self

    def __next__(self):
        if not self.cuda:
            return self._fetch()
        t0 = time.perf_counter()
        torch.cuda.current_stream().wait_stream(self.stream)
        b, _ = self._next
        b.record_stream(torch.cuda.current_stream())
        self._next = self._fetch()    # host time: loader wait + launching the async collate
        return b, time.perf_counter() - t0

"""The endless sample stream: which sample each rank reads next (:class:`StreamSampler`), the
DataLoader around a :class:`~.dataset.CacheDataset`, and :func:`training_stream`, the one
place that wires dataset, sampler, loader and collate together for training and export
(docs/design.md, "stream")."""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, Sampler

from .collate import WarpCollate
from .dataset import CacheDataset
from .folder import FolderCollate, FolderDataset
from .records import mix_seed

__all__ = ["StreamSampler", "make_loader", "training_stream"]


class StreamSampler(Sampler):
    """Endless ``(index, sample_seed)`` stream: a fresh permutation per epoch, sharded by rank.

    Rank ``r`` of ``world`` takes every ``world``-th element of each epoch's permutation
    (wrapped to equal length), so ranks see disjoint data. ``start`` skips that many samples
    of this rank's stream (resume). ``sample_seed`` is unique per (seed, rank, position).
    ``weights`` (per item, e.g. :meth:`~.dataset.CacheDataset.sample_weights`): an epoch is
    ``n`` draws with replacement in proportion to them instead of a permutation.
    """

    def __init__(self, n: int, *, seed: int, rank: int = 0, world: int = 1, start: int = 0,
                 weights: torch.Tensor | None = None):
        if n < 1:
            raise ValueError("StreamSampler needs at least one sample")
        self.n, self.seed, self.rank, self.world, self.start = n, seed, rank, world, start
        self.per_rank = math.ceil(n / world)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)

    def _perm(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(mix_seed(self.seed, "epoch", epoch))
        if self.weights is not None:
            return torch.multinomial(self.weights, self.per_rank * self.world, replacement=True,
                                     generator=g)
        perm = torch.randperm(self.n, generator=g)
        reps = math.ceil(self.per_rank * self.world / self.n)
        return perm.repeat(reps)[: self.per_rank * self.world]

    def __iter__(self):
        pos, epoch, perm = self.start, None, None
        while True:
            e, off = divmod(pos, self.per_rank)
            if e != epoch:
                epoch, perm = e, self._perm(e)
            yield int(perm[self.rank + off * self.world]), mix_seed(self.seed, self.rank, pos)
            pos += 1


def make_loader(ds: CacheDataset, sampler: StreamSampler, *, pin_memory: bool = False) -> DataLoader:
    """The DataLoader of a stream: ``data.batch_size``, workers started by
    ``data.worker_start`` with ``data.prefetch_factor`` batches each in flight."""
    c, nw = ds.cfg, ds.cfg.num_workers
    return DataLoader(ds, batch_size=c.batch_size, sampler=sampler, num_workers=nw,
                      pin_memory=pin_memory, prefetch_factor=c.prefetch_factor if nw else None,
                      multiprocessing_context=c.worker_start if nw else None)


def training_stream(ds: CacheDataset | FolderDataset, cfg, device: torch.device, *, seed: int, rank: int = 0,
                    world: int = 1, start_batch: int = 0, augment: bool = True,
                    sync_ok: bool | None = None) -> tuple[DataLoader, WarpCollate]:
    """The loader and the collate of one rank's stream, from batch ``start_batch`` on.

    ``cfg`` is the run's :class:`~inpaint_online.config.Config` (its ``data``, ``warp`` and
    ``collate`` sections). The n-th batch the loader yields is meant to be collated with
    ``collate(batch, step=n)``: the sample stream and the warp draws both depend only on
    ``(seed, rank, n)``, so training, a resumed run and an export see the same samples. Used by
    training (through :class:`~.prefetch.Prefetcher`) and by the export (which collates
    subsets of a batch itself). A :class:`~.folder.FolderDataset` (``data.source: folder``)
    gets a :class:`~.folder.FolderCollate` instead: its holes are read, not warped."""
    sampler = StreamSampler(len(ds), seed=seed, rank=rank, world=world,
                            start=start_batch * cfg.data.batch_size, weights=ds.sample_weights())
    loader = make_loader(ds, sampler, pin_memory=torch.device(device).type == "cuda")
    if isinstance(ds, FolderDataset):        # a fixed dataset: its holes, iw3's augmentation
        return loader, FolderCollate(cfg.collate, device=device, seed=seed, rank=rank,
                                     augment=augment)
    collate = WarpCollate(cfg.warp, cfg.collate, device=device, seed=seed, rank=rank,
                          augment=augment, sync_ok=sync_ok)
    return loader, collate

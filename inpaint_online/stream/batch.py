"""The contract between the stream and training: one :class:`Batch` of masked inputs, masks,
targets, depth and the warp parameters that made them, on the training device
(docs/design.md, "stream": shapes, dtypes, orientation)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ..warp import WarpParams

__all__ = ["Batch"]


@dataclass
class Batch:
    """One training batch on the device, in right-view orientation; images in [0, 1].
    Clip batches have a frame axis: ``(B, T, C, H, W)``; ``params`` are per clip."""
    x: torch.Tensor            # (B, 3, H, W) masked input: y with the holes zeroed
    mask: torch.Tensor         # (B, 1, H, W) float, 1 = hole
    y: torch.Tensor            # (B, 3, H, W) target
    depth: torch.Tensor        # (B, 1, H, W) depth in [0, 1] (zero in the holes)
    params: WarpParams | None  # the drawn parameters (on the device); None: holes read
                               # from a fixed dataset (data.source: folder)
    meta: dict                 # index, seed, box, flip (CPU tensors from the dataset)
    layered: torch.Tensor | None = None   # (B,) iw3 layered-hole pixels per sample (all frames)

    def __len__(self) -> int:
        return self.y.shape[0]

    def take(self, idx: torch.Tensor | list[int]) -> "Batch":
        """The samples ``idx`` (in that order) of this batch."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        dev = idx.to(self.y.device)
        meta = {k: (v[idx] if isinstance(v, torch.Tensor) else [v[i] for i in idx.tolist()])
                for k, v in self.meta.items()}
        return Batch(x=self.x[dev], mask=self.mask[dev], y=self.y[dev], depth=self.depth[dev],
                     params=None if self.params is None else self.params.map(lambda v: v[idx.to(v.device)]),
                     meta=meta,
                     layered=None if self.layered is None else self.layered[dev])

    def inner(self, offset: int) -> "Batch":
        """This batch without ``offset`` pixels on every side (what a model with an output
        offset is trained and scored on: iw3's light networks, 16 px)."""
        if offset <= 0:
            return self
        cut = lambda t: t[..., offset:-offset, offset:-offset]  # noqa: E731
        return Batch(x=cut(self.x), mask=cut(self.mask), y=cut(self.y), depth=cut(self.depth),
                     params=self.params, meta=self.meta, layered=self.layered)

    @staticmethod
    def cat(parts: list["Batch"]) -> "Batch":
        """One batch of the samples of ``parts`` (same crop size and parameter settings)."""
        first = parts[0]
        fp, params = first.params, None
        if fp is not None:
            tensors = {f.name: torch.cat([getattr(p.params, f.name) for p in parts])
                       for f in fields(fp) if isinstance(getattr(fp, f.name), torch.Tensor)}
            params = WarpParams(**{f.name: tensors.get(f.name, getattr(fp, f.name))
                                   for f in fields(fp)})
            params.shift_bound = max(p.params.shift_bound for p in parts)
            params.dilation_bound = max(p.params.dilation_bound for p in parts)
        meta = {k: (torch.cat([p.meta[k] for p in parts]) if isinstance(v, torch.Tensor)
                    else [x for p in parts for x in p.meta[k]]) for k, v in first.meta.items()}
        return Batch(x=torch.cat([p.x for p in parts]), mask=torch.cat([p.mask for p in parts]),
                     y=torch.cat([p.y for p in parts]), depth=torch.cat([p.depth for p in parts]),
                     params=params, meta=meta,
                     layered=None if first.layered is None else torch.cat([p.layered for p in parts]))

    def record_stream(self, stream) -> None:
        """Tell the caching allocator these side-stream tensors are used on ``stream``."""
        params = ([] if self.params is None else
                  [getattr(self.params, f.name) for f in fields(self.params)])
        for t in [self.x, self.mask, self.y, self.depth, self.layered, *params]:
            if isinstance(t, torch.Tensor) and t.is_cuda:
                t.record_stream(stream)

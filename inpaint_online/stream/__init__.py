"""The stream stage: cached (image, depth) crops in DataLoader workers → masked training
pairs on the device, fresh warp draws every step (docs/design.md, "stream").

* :mod:`.records`: the records a run draws from (held-out split, clips, seeds);
* :mod:`.dataset`: :class:`CacheDataset` (crops, flips, jitter draws, layered composites; CPU);
* :mod:`.folder`: :class:`FolderDataset` and :class:`FolderCollate`, the same batches from a
  fixed dataset in iw3's layout (``data.source: folder``);
* :mod:`.color`: the colour jitter, applied per sample on the device;
* :mod:`.collate`: :class:`WarpCollate` (jitter → warp → masks → orientation →
  :class:`Batch`; device);
* :mod:`.batch`: :class:`Batch`, the contract between the stream and training;
* :mod:`.prefetch`: :class:`Prefetcher` (the collate one batch ahead on a side stream);
* :mod:`.loader`: :class:`StreamSampler`, :func:`make_loader` and :func:`training_stream`,
  the one wiring of all of the above that training and export share.
"""

from .batch import Batch
from .collate import CollateConfig, WarpCollate
from .dataset import DEPTH_OFFSET, CacheDataset, DataConfig, window_size
from .folder import FolderCollate, FolderDataset, orientation_depth, split_folder
from .loader import StreamSampler, make_loader, training_stream
from .prefetch import Prefetcher
from .records import RecordTable, clip_runs, drop_small, mix_seed, split_records

__all__ = ["Batch", "CollateConfig", "WarpCollate", "CacheDataset", "DataConfig", "window_size",
           "DEPTH_OFFSET", "FolderDataset", "FolderCollate", "orientation_depth", "split_folder",
           "StreamSampler", "make_loader", "training_stream", "Prefetcher",
           "RecordTable", "clip_runs", "drop_small", "mix_seed", "split_records"]

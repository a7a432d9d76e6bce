"""The train stage: the loop, the model's optimiser step, validation and the run folder
(docs/design.md, "train").

* :mod:`.loop`: :func:`train` (setup, loop, validation, checkpoints; DDP marked ``# DDP``);
* :mod:`.trainer`: :class:`Trainer` (one optimiser step per call) and :func:`restore`
  (``train.init_from`` / ``--resume``);
* :mod:`.validation`: the fixed held-out set, its scores, ``best.pt`` / ``best_ema.pt``;
* :mod:`.rundir`: ``config.yaml``, ``metrics.jsonl``, TensorBoard, checkpoint writes;
* :mod:`.cli`: ``train_online.py`` / ``inpaint-train``.
"""

from .loop import TrainResult, train
from .trainer import Trainer, lr_lambda, restore
from .validation import evaluate, hole_texture, pick_in_turns, validation_batches

__all__ = ["train", "TrainResult", "Trainer", "lr_lambda", "restore", "evaluate",
           "hole_texture", "pick_in_turns", "validation_batches"]

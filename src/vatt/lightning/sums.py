"""Epoch sums over every rank, reduced where all ranks are at once.

Lightning reduces a ``sync_dist`` epoch metric lazily, when something first reads the
metrics; at the end of a training epoch without validation that is rank 0's progress
bar, while the other ranks are already in the checkpoint's all-reduce: the ranks'
collectives then no longer match and the run deadlocks. These sums are reduced in
``on_train_epoch_end``, which every rank runs at the same point, and logged as plain
values.
"""

from __future__ import annotations

import re
import warnings

import lightning as L
import torch


def log_epoch_sums(module: L.LightningModule, sums: dict[str, torch.Tensor | int]) -> None:
    """Log each value summed over the ranks (a collective on every rank, here and now), unsynced."""
    for name, value in sums.items():
        value = torch.as_tensor(value, device=module.device).float()
        if module._trainer is not None and module.trainer.world_size > 1:
            value = module.trainer.strategy.reduce(value, reduce_op="sum")
        # Lightning advises sync_dist for an unsynced epoch value of a multi-device run; this one is summed above
        warnings.filterwarnings("ignore", message=rf"It is recommended to use `self.log\({re.escape(repr(name))}, ")
        module.log(name, value, on_epoch=True, sync_dist=False)

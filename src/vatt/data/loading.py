"""What every loader of the project shares: workers that leave stop signals to the main process.

``DataLoader`` and ``StreamingDataLoader`` are torch's and litdata's loaders whose
worker processes start with SIGTERM/SIGINT/SIGUSR1 blocked (``vatt.interrupts``):
a scheduler that signals every process of a job (SLURM, Kubernetes, ``timeout``,
Ctrl-C in a terminal) reaches the main process, which finishes its step, writes its
checkpoint and then shuts the workers down in order, instead of a worker dying and
taking the run down with "DataLoader worker ... is killed by signal".
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.utils.data
from litdata import StreamingDataLoader as _LitdataStreamingDataLoader

from vatt.interrupts import children_ignore_stop_signals


class _QuietWorkers:
    """Mixin: the worker processes of a new iterator are started with the stop signals blocked."""

    num_workers: int

    def _get_iterator(self) -> Any:
        if self.num_workers == 0:
            return super()._get_iterator()  # type: ignore[misc]
        with children_ignore_stop_signals():
            return super()._get_iterator()  # type: ignore[misc]


class DataLoader(_QuietWorkers, torch.utils.data.DataLoader):
    """``torch.utils.data.DataLoader`` whose workers ignore stop signals (see the module docstring)."""


class StreamingDataLoader(_QuietWorkers, _LitdataStreamingDataLoader):
    """litdata's ``StreamingDataLoader`` whose workers ignore stop signals (see the module docstring)."""


def default_num_workers(requested: int | None, cap: int = 4) -> int:
    """``requested``, or (None) ``cap`` loader workers but never more than the CPU cores this process may use."""
    if requested is not None:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cap, cores))


def own_generator() -> torch.Generator:
    """The ``generator=`` of a loader without shuffling (validation, test).

    Every new iterator draws its workers' base seed from the loader's generator,
    by default the global one that dropout and DropToken draw from. A resumed run
    first iterates a persistent validation loader at another point than the
    uninterrupted run did, so that draw would shift the training's random numbers;
    with a generator of its own the loader leaves them alone (validation draws
    nothing else: its windows are fixed).
    """
    return torch.Generator().manual_seed(0)

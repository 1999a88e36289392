"""What every loader of the project shares: workers that leave stop signals to the main process.

``DataLoader`` and ``StreamingDataLoader`` are torch's and litdata's loaders whose
worker processes start with SIGTERM/SIGINT/SIGUSR1 blocked (``vatt.interrupts``):
a scheduler that signals every process of a job (SLURM, Kubernetes, ``timeout``,
Ctrl-C in a terminal) reaches the main process, which finishes its step, writes its
checkpoint and then shuts the workers down in order, instead of a worker dying and
taking the run down with "DataLoader worker ... is killed by signal".
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.utils.data
from litdata import StreamingDataLoader as _LitdataStreamingDataLoader

from vatt.errors import UserError
from vatt.interrupts import children_ignore_stop_signals, obey_parent_only


def _ignore_a_stopped_receiver(hook: Callable[..., Any]) -> Callable[..., Any]:
    """``sys.excepthook`` for a worker: a batch's receiver that went away mid-handshake is not an error.

    A worker hands a batch's tensors over by passing file descriptors, served by
    ``multiprocessing``'s resource-sharer thread, which reports any failure through
    ``sys.excepthook``. When the main process stops on a signal while it fetches a
    batch, that thread sees the connection break (``BrokenPipeError`` in the
    handshake) and would print a traceback for what is an orderly stop.
    """

    def filtered(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        frames = traceback.extract_tb(tb)
        if issubclass(kind, (ConnectionError, EOFError)) and any(f.filename.endswith("resource_sharer.py") for f in frames):
            return
        hook(kind, value, tb)

    return filtered


def _quiet_worker_init(inner: Callable[[int], None] | None, worker_id: int) -> None:
    obey_parent_only()
    sys.excepthook = _ignore_a_stopped_receiver(sys.excepthook)
    if inner is not None:
        inner(worker_id)


class _QuietWorkers:
    """Mixin: the worker processes of a new iterator start with the stop signals blocked and obey only the loader.

    Also the default ``collate_fn``: ``vatt.data.clip.collate_clips`` (training clips carry crop boxes of
    different sizes, which it pads), ``default_collate`` for everything else.
    """

    num_workers: int
    worker_init_fn: Callable[[int], None] | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("collate_fn") is None:
            from .clip import collate_clips

            kwargs["collate_fn"] = collate_clips
        super().__init__(*args, **kwargs)

    def _get_iterator(self) -> Any:
        if self.num_workers == 0:
            return super()._get_iterator()  # type: ignore[misc]
        inner = self.worker_init_fn  # the iterator reads it once, when it starts the workers
        self.worker_init_fn = functools.partial(_quiet_worker_init, inner)
        try:
            with children_ignore_stop_signals():
                return super()._get_iterator()  # type: ignore[misc]
        finally:
            self.worker_init_fn = inner


class DataLoader(_QuietWorkers, torch.utils.data.DataLoader):
    """``torch.utils.data.DataLoader`` whose workers ignore stop signals (see the module docstring)."""


class StreamingDataLoader(_QuietWorkers, _LitdataStreamingDataLoader):
    """litdata's ``StreamingDataLoader`` whose workers ignore stop signals (see the module docstring).

    ``drop_last=True`` also drops each worker's last partial batch. litdata uses the
    flag only to split the samples into equal shares and does not hand it to the torch
    loader, which then keeps a worker's last few clips as a small batch: a 1-clip
    batch breaks BatchNorm, and ranks would run unequal numbers of steps.
    """

    def __init__(self, *args: Any, drop_last: bool | None = None, **kwargs: Any) -> None:
        super().__init__(*args, drop_last=drop_last, **kwargs)
        if drop_last:
            object.__setattr__(self, "drop_last", True)  # torch's DataLoader refuses to change it after __init__

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        """The position of a checkpoint; a mix of sources resumed on another layout is a message, not litdata's error."""
        try:
            super().load_state_dict(obj)
        except ValueError as err:
            if "support resume only when world_size, num_workers, and batch_size match" not in str(err):
                raise
            raise UserError(_mix_resume_message(obj, self.num_workers, self.batch_size)) from err


def _mix_resume_message(obj: dict[str, Any], num_workers: int, batch_size: int) -> str:
    from litdata.utilities.env import _DistributedEnv

    saved = next((c for c in (obj.get("dataset") or {}).values() if isinstance(c, dict) and "world_size" in c), {})
    then = (saved.get("world_size", "?"), saved.get("num_workers", "?"), saved.get("batch_size", "?"))
    now = (_DistributedEnv.detect().world_size, max(1, num_workers), batch_size)
    return ("ckpt_path: the checkpoint's data position is in a mix of several sources (data.sources), which "
            "litdata resumes only on the layout it was saved on: {} device(s) x {} loader worker(s) x "
            "data.batch_size={} (this run: {} x {} x {}). Resume with the checkpoint's trainer.devices "
            "(x trainer.num_nodes), data.num_workers and data.batch_size".format(*then, *now))


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: a SLURM or container limit counts)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_num_workers(requested: int | None, cap: int = 4) -> int:
    """``requested``, or (None) ``cap`` loader workers, leaving a core to the training process (at least 1 worker).

    On the 2-core demo machine that is 1: a second worker would take the core the step's
    math runs on without making epochs faster (README "Pretraining on the demo data")."""
    if requested is not None:
        return requested
    return max(1, min(cap, usable_cores() - 1))


def share_cores_with_workers(num_workers: int, processes: int = 1) -> int | None:
    """Math threads for a training process on the CPU beside its ``num_workers`` busy loader workers.

    torch gives every process one math thread per core; the loader workers (one
    thread each) then take cores its OpenMP threads wait on, and a step slows down
    by more than the cores it lost (on 2 cores beside one busy process, the demo's
    step took 0.95-1.4 s with 2 threads and 0.5 s with 1; bench/cpu_step.py).
    Each of ``processes`` training processes (DDP ranks on this machine) gets its
    share of the cores less one per worker, at least 1; ``OMP_NUM_THREADS`` is set
    too, so ranks started later inherit it (a value this function set itself, e.g.
    for an earlier job of a multirun, is chosen again). Returns the number chosen,
    or None (nothing changed) where the user set ``OMP_NUM_THREADS``.
    """
    global _chosen_threads
    if os.environ.get("OMP_NUM_THREADS", _chosen_threads) != _chosen_threads:
        return None
    threads = max(1, usable_cores() // max(1, processes) - num_workers)
    torch.set_num_threads(threads)
    _chosen_threads = os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


_chosen_threads: str | None = None  # the OMP_NUM_THREADS share_cores_with_workers set in this process


def loader_kwargs(batch_size: int, num_workers: int, train: bool, pin_memory: bool = True,
                  persistent_workers: bool = False) -> dict[str, Any]:
    """The arguments a DataModule's ``DataLoader`` / ``StreamingDataLoader`` shares with every other.

    Training drops the last partial batch (equal batches on every rank for the
    gathered losses and BatchNorm); the other loaders draw their workers' seeds from
    ``own_generator``. Memory is pinned only where there is a GPU to copy to, and
    workers persist only where there are workers.
    """
    kwargs: dict[str, Any] = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "pin_memory": pin_memory and torch.cuda.is_available(),
        "persistent_workers": persistent_workers and num_workers > 0,
    }
    if train:
        kwargs["drop_last"] = True
    else:
        kwargs["generator"] = own_generator()
    return kwargs


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

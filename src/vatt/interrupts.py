"""Stop signals as schedulers send them: to every process of a job, not only the main one.

SLURM (``scancel``, the time limit, ``--signal=USR1@120``), Kubernetes and
``docker stop``, coreutils ``timeout`` and a terminal's Ctrl-C all signal the whole
process group, so DataLoader workers and preparation workers get the signal too.
The rule here: **the main process decides how to stop, helper processes never act on
a stop signal.** Helpers are started with the stop signals blocked (the mask is
inherited through ``fork`` and ``exec``), so a signal can neither kill one half-way
through a sample nor run a handler inherited from the parent; the main process
stops them in order (DataLoader shutdown, ``prepare``'s stop flag) once it has
finished what it was doing.

- ``children_ignore_stop_signals()``: processes started inside the block never see
  a stop signal; the main process gets any that arrive meanwhile when the block ends.
  Such a child calls ``obey_parent_only()`` first thing, so that its parent can still
  end it with SIGTERM (``Process.terminate()``).
- ``raise_on_stop_signals()``: for code with nothing to checkpoint (evaluation,
  the set-up before training): a stop signal raises ``Stopped`` in the main thread,
  which the command turns into a one-line message and exit status 128 + signal.
- ``worker_ignores_stop_signals()``: for a ``multiprocessing.Pool`` initializer,
  whose ``terminate()`` needs SIGTERM to work: SIGTERM keeps its default (the worker
  ends quietly), SIGINT and SIGUSR1 are ignored.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Stopped(BaseException):
    """A stop signal reached a command between checkpoints; ``exit_code`` is 128 + the signal number.

    A ``BaseException`` (like ``KeyboardInterrupt``), so ``except Exception`` blocks
    on the way up do not swallow it.
    """

    def __init__(self, signum: int) -> None:
        self.signal = signal.Signals(signum)
        super().__init__(f"stopped by {self.signal.name}")

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signal)


# While ``children_ignore_stop_signals`` starts children, a signal that reached the
# process just before the mask went up still runs its Python handler inside the block
# (the interpreter runs handlers between bytecodes, after the OS delivered them). Raising
# there would abandon half-built objects (a DataLoader iterator whose ``__del__`` then
# fails on missing attributes), so ``raise_on_stop_signals``' handler only records the
# signal while the block is active, and the block raises ``Stopped`` as it ends.
_shielded = 0
_pending: int | None = None


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def children_ignore_stop_signals() -> Iterator[None]:
    """Block the stop signals while child processes are started inside, so that they never act on one.

    The calling thread's signal mask is what ``fork`` (and ``exec``) hands to a child;
    this process gets a signal that arrived meanwhile as soon as the block ends.
    """
    if not hasattr(signal, "pthread_sigmask") or not _main_thread():
        yield
        return
    global _shielded, _pending
    _shielded += 1
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        _shielded -= 1
        if not _shielded and _pending is not None:
            signum, _pending = _pending, None
            raise Stopped(signum)


@contextlib.contextmanager
def raise_on_stop_signals() -> Iterator[None]:
    """Inside the block, a stop signal raises ``Stopped`` in the main thread (handlers are put back after)."""
    if not _main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        global _pending
        if _shielded:  # children are being started: stop once they are, not half-way (see _shielded)
            _pending = signum
            return
        raise Stopped(signum)

    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def obey_parent_only() -> None:
    """In a child started inside ``children_ignore_stop_signals``: a SIGTERM from its parent ends it quietly.

    That is how the parent stops helpers in order (``multiprocessing``'s
    ``terminate()``, also at interpreter exit); the same signals from anyone else (a
    scheduler signalling the whole job) are taken and ignored. A daemon thread waits
    for them with ``sigwaitinfo``, which tells who sent each one. Call it once per child.
    """
    if not hasattr(signal, "sigwaitinfo"):
        return
    parent = os.getppid()

    def watch() -> None:
        while True:
            info = signal.sigwaitinfo(STOP_SIGNALS)
            if info.si_signo == signal.SIGTERM and info.si_pid == parent:
                os._exit(0)

    threading.Thread(target=watch, name="stop-signals", daemon=True).start()


def worker_ignores_stop_signals() -> None:
    """``multiprocessing.Pool(initializer=...)``: SIGTERM quietly ends the worker (``Pool.terminate`` uses it),
    SIGINT and SIGUSR1 are ignored, and no handler inherited from the parent runs."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

"""Progress of anything that takes more than a few seconds: a rich bar on a terminal, plain lines otherwise.

Under ``make`` in a terminal the bar redraws in place; in a log file, a CI job or
a pipe (where a bar would be invisible or a mess of control codes) a line
``<what>: 120/1280 (9%), 0:00:31 elapsed, ~0:05:12 left`` is written when the work
starts, every ``every_s`` seconds and at the end, through ``logging`` (so it also
lands in a run's ``train.log``) or to stderr when no logger is given.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def on_terminal() -> bool:
    return sys.stderr.isatty()


class Progress:
    """``with Progress(what, total) as p: ... p.update(done)`` (``done`` counts up to ``total``; None: unknown).

    ``update`` may be called from another thread than the one that opened it.
    """

    def __init__(self, what: str, total: int | None, logger: logging.Logger | None = None, every_s: float = 10.0,
                 enabled: bool = True) -> None:
        self.what, self.total, self.every_s, self.enabled = what, total, every_s, enabled
        self._say = logger.info if logger is not None else (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._bar: Any = None
        self.done = 0

    def __enter__(self) -> Progress:
        self._start = self._last = time.monotonic()
        if not self.enabled:
            return self
        if on_terminal():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn(self.what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.what, total=self.total)
        elif self.total:
            self._say(f"{self.what}: {self.total} to do")
        return self

    def update(self, done: int) -> None:
        self.done = done
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=done)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s and (self.total is None or done < self.total):
            self._last = now
            self._say(self._line(now))

    def __exit__(self, *exc: Any) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.__exit__(*exc)
        if self.done and exc[0] is None:
            self._say(self._line(time.monotonic()))

    def _line(self, now: float) -> str:
        elapsed = now - self._start
        if not self.total:
            return f"{self.what}: {self.done} done, {_clock(elapsed)} elapsed"
        left = elapsed / max(self.done, 1) * (self.total - self.done)
        return (f"{self.what}: {self.done}/{self.total} ({100 * self.done // self.total}%), {_clock(elapsed)} elapsed, "
                f"~{_clock(left)} left")


def track(items: Iterable[T], total: int | None, what: str, logger: logging.Logger | None = None,
          every_s: float = 10.0, enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` while showing how far along they are (``total`` items; None: unknown)."""
    with Progress(what, total, logger, every_s, enabled) as progress:
        for i, item in enumerate(items, 1):
            yield item
            progress.update(i)

"""Errors that are the user's to fix (a config value, a path, a dataset layout), reported without a traceback.

``reported(prog)`` wraps a command: an error for the user ends it with one line
``<prog>: error: <message>`` and status 1 (``HYDRA_FULL_ERROR=1`` shows the
traceback). An error is the user's when it is a ``UserError``, an exception class of
this package (``CheckpointError``, ``PrepareError``, ...), or a ``ValueError``,
``TypeError``, ``KeyError`` or ``FileNotFoundError`` raised by a line of this package
(our messages name the file or key and the fix); Hydra's instantiation wrapper is
looked through. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path


class UserError(ValueError):
    """A message naming the file or config key at fault and the fix."""


_PACKAGE = str(Path(__file__).resolve().parent)
# errors our own code raises on purpose with a message for the user (a file, a key, a layout and the fix)
_OWN_KINDS = (ValueError, TypeError, KeyError, FileNotFoundError, NotADirectoryError, FileExistsError)


def _raised_here(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by a line of this package (not by a library it called)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.startswith(_PACKAGE)


def user_message(exc: BaseException) -> str | None:
    """The message of an error for the user to fix, looking through wrappers (Hydra's); None: a bug."""
    seen = exc
    while seen is not None:
        own_class = type(seen).__module__.split(".")[0] == "vatt"
        if isinstance(seen, UserError) or (own_class and isinstance(seen, Exception)) or (
                isinstance(seen, _OWN_KINDS) and _raised_here(seen)):
            return str(seen.args[0]) if isinstance(seen, KeyError) and seen.args else str(seen)
        seen = seen.__cause__
    return None


@contextlib.contextmanager
def reported(prog: str, logger: logging.Logger | None = None) -> Iterator[None]:
    """Errors for the user end the command with ``<prog>: error: <message>`` and status 1, without a traceback.

    ``HYDRA_FULL_ERROR=1`` re-raises them with their traceback; bugs always keep it.
    """
    try:
        yield
    except Exception as e:
        message = user_message(e)
        if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if logger is not None:  # into the run's log file too (the console gets the line below)
            record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, message, None, None)
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.FileHandler):
                    handler.handle(record)
        print(f"{prog}: error: {message}\n(HYDRA_FULL_ERROR=1 shows the traceback)", file=sys.stderr, flush=True)
        raise SystemExit(1) from None

"""Reading a sample whose file may not decode: skip it, count it and read a replacement instead.

Every training dataset (manifest clips, shards, labelled clips) hands out one
sample per index. ``read_or_replace`` tries the index's own sample, then the
replacements the dataset proposes, in a fixed order (so a run reads the same
replacement whichever worker reads it). Each sample that fails is logged and
counted: the sample returned carries the count as ``skipped`` (logged by the
training module as ``data/skipped``). After ``MAX_BAD_IN_A_ROW`` failures, or
when the replacements run out, the dataset stops with an error.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

import torch

from .clip import MAX_BAD_IN_A_ROW
from .media import MediaError

T = TypeVar("T")


class FailedBefore(Exception):
    """Raised by a ``read`` for a candidate already known to be unreadable: counted as skipped, not logged again."""


def read_or_replace(
    candidates: Iterable[T],
    read: Callable[[T], dict[str, torch.Tensor]],
    describe: Callable[[T, Exception], str],
    failure: Callable[[list[str]], str],
    log: logging.Logger,
    errors: tuple[type[Exception], ...] = (MediaError, OSError),
) -> dict[str, torch.Tensor]:
    """``read`` of the first of ``candidates`` that reads, with ``skipped``: how many failed before it.

    ``candidates``: the index's own sample first, then its replacements (at most
    ``MAX_BAD_IN_A_ROW`` in all are tried). A candidate whose ``read`` raises one of
    ``errors`` is logged on ``log`` as "data: skipping <describe(candidate, error)>";
    one that raises ``FailedBefore`` is counted without a log line. When none reads,
    ``RuntimeError(failure(messages))`` with the messages of the failed candidates.
    """
    messages: list[str] = []
    for candidate in itertools.islice(candidates, MAX_BAD_IN_A_ROW):
        try:
            sample = read(candidate)
        except FailedBefore as e:
            messages.append(str(e))
            continue
        except errors as e:
            messages.append(str(e))
            log.warning("data: skipping %s", describe(candidate, e))
            continue
        sample["skipped"] = torch.tensor(len(messages))
        return sample
    raise RuntimeError(failure(messages))


def in_a_row(messages: list[str]) -> str:
    """The error of a dataset whose replacements are the clips after the bad one (``following``)."""
    return f"data: {len(messages)} clips in a row could not be read, e.g. {messages[:2]}"


def following(index: int, size: int) -> Iterable[int]:
    """``index`` and the indices after it, wrapping around a dataset of ``size`` samples."""
    return ((index + k) % size for k in range(MAX_BAD_IN_A_ROW))

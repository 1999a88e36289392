"""Stop signals in the main process: ``Stopped`` is raised where it leaves whole objects behind."""

from __future__ import annotations

import os
import signal

import pytest

from vatt.interrupts import Stopped, children_ignore_stop_signals, raise_on_stop_signals


def test_a_stop_signal_raises_stopped_with_exit_status_128_plus_the_signal():
    with pytest.raises(Stopped) as caught, raise_on_stop_signals():
        os.kill(os.getpid(), signal.SIGUSR1)
        signal.sigtimedwait([], 0)  # a bytecode boundary after delivery is enough; this makes sure of one
    assert caught.value.signal == signal.SIGUSR1 and caught.value.exit_code == 128 + signal.SIGUSR1


def test_a_signal_whose_handler_runs_while_children_start_is_raised_only_when_they_have_started():
    # The handler runs inside the block (as when the signal reached the process just
    # before the mask went up): the code in the block still runs to its end.
    done = []
    with pytest.raises(Stopped) as caught, raise_on_stop_signals():
        with children_ignore_stop_signals():
            signal.raise_signal(signal.SIGTERM)  # runs the Python handler at once, mask or not
            done.append("children started")
    assert done == ["children started"] and caught.value.exit_code == 143


def test_a_signal_sent_while_children_start_is_raised_as_the_block_ends_and_not_lost():
    done = []
    with pytest.raises(Stopped) as caught, raise_on_stop_signals():
        with children_ignore_stop_signals():
            os.kill(os.getpid(), signal.SIGINT)  # blocked: pending until the mask comes down
            done.append("children started")
    assert done == ["children started"] and caught.value.signal == signal.SIGINT


def test_the_previous_handlers_are_back_after_the_block():
    before = signal.getsignal(signal.SIGTERM)
    with raise_on_stop_signals():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before

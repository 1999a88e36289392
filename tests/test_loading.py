"""What every loader shares: the CPU cores a training process leaves to its loader workers."""

from __future__ import annotations

import os

import pytest
import torch

from vatt.data import loading
from vatt.data.loading import share_cores_with_workers


@pytest.fixture
def cores(monkeypatch):
    """A machine of ``n`` usable cores with no OMP_NUM_THREADS; torch's thread count put back afterwards."""
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(loading, "_chosen_threads", None)  # (put back afterwards: no test inherits a choice)

    def machine(n: int) -> None:
        monkeypatch.setattr(loading, "usable_cores", lambda: n)

    yield machine
    torch.set_num_threads(before)


@pytest.mark.parametrize("n, workers, processes, expected", [
    (2, 2, 1, 1),   # the 2-core demo machine: one thread beside two workers, never zero
    (2, 1, 1, 1),
    (16, 4, 1, 12),
    (16, 2, 2, 6),  # two DDP ranks on one machine: 8 cores each, less their workers
    (8, 0, 1, 8),   # no workers (debug=fdr): every core
])
def test_a_cpu_training_process_leaves_a_core_to_each_loader_worker(cores, n, workers, processes, expected):
    cores(n)
    assert share_cores_with_workers(workers, processes) == expected
    assert torch.get_num_threads() == expected and os.environ["OMP_NUM_THREADS"] == str(expected)


def test_omp_num_threads_set_by_the_user_wins(cores, monkeypatch):
    cores(16)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    torch.set_num_threads(3)
    assert share_cores_with_workers(4) is None
    assert torch.get_num_threads() == 3 and os.environ["OMP_NUM_THREADS"] == "3"


def test_a_later_run_in_the_same_process_chooses_again_for_its_own_workers(cores):
    """A multirun's jobs share one process: the value set for the first job is not mistaken for the user's."""
    cores(8)
    assert share_cores_with_workers(2) == 6
    assert share_cores_with_workers(4) == 4
    assert torch.get_num_threads() == 4 and os.environ["OMP_NUM_THREADS"] == "4"

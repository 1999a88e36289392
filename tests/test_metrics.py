"""Retrieval metrics against hand-computed ranks."""

import pytest
import torch

from vatt.metrics import retrieval_metrics, retrieval_ranks


def test_ranks_and_recall_by_hand():
    gallery = torch.eye(4)
    # query 0 -> item 0 (rank 1); query 1 closest to item 2 then 1 (rank 2);
    # query 2 matches 3 best, then 0, then 2 (rank 3); query 3 -> item 3 (rank 1)
    query = torch.tensor(
        [[1.0, 0, 0, 0], [0, 0.5, 0.9, 0], [0.6, 0, 0.3, 0.9], [0, 0, 0, 1.0]]
    )
    assert retrieval_ranks(query, gallery).tolist() == [1, 2, 3, 1]
    m = retrieval_metrics(query, gallery, ks=(1, 2, 10))
    assert m["R@1"] == pytest.approx(0.5)
    assert m["R@2"] == pytest.approx(0.75)
    assert m["R@10"] == pytest.approx(1.0)
    assert m["MedR"] == pytest.approx(1.5)


def test_ties_count_against_the_query():
    assert retrieval_ranks(torch.ones(3, 2), torch.ones(3, 2)).tolist() == [3, 3, 3]


def test_random_embeddings_are_near_chance():
    torch.manual_seed(0)
    m = retrieval_metrics(torch.randn(500, 64), torch.randn(500, 64))
    assert m["R@10"] == pytest.approx(10 / 500, abs=0.02)

"""Zero-shot retrieval metrics (pure torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def retrieval_ranks(query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """1-based rank of gallery item i for query i under cosine similarity.

    ``query``, ``gallery``: ``[N, D]``. Ties count against the query (pessimistic).
    """
    q, g = F.normalize(query.float(), dim=-1), F.normalize(gallery.float(), dim=-1)
    sim = q @ g.T  # N, N
    target = sim.diagonal()[:, None]
    return (sim >= target).sum(dim=1)


def retrieval_metrics(query: torch.Tensor, gallery: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K (fraction of queries whose match ranks <= K) and median rank."""
    ranks = retrieval_ranks(query, gallery).float()
    out = {f"R@{k}": (ranks <= k).float().mean().item() for k in ks}
    out["MedR"] = ranks.quantile(0.5).item()  # the usual median: mean of the two middle ranks when N is even
    return out

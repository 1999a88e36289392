"""Downstream heads on a VATT backbone (plain ``nn.Module``s)."""

from __future__ import annotations

import math

import torch
from torch import nn


class ClassifierHead(nn.Module):
    """Dropout + a linear layer on the pooled ``[AGG]`` feature: ``[B, D]`` -> logits ``[B, C]``.

    The paper fine-tunes with dropout 0.5 before the head for video and none for
    audio (paper §4; docs/vatt.md §7). ``prior`` sets the bias so that a sigmoid head starts at
    probability ``prior`` per class (``1/C`` for AudioSet: bias = -log(C - 1)),
    which keeps the first multi-label steps from being dominated by the many
    negatives.
    """

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.0, prior: float | None = None) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}: a classifier needs at least 2 classes")
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, num_classes)
        nn.init.trunc_normal_(self.linear.weight, std=0.02)
        nn.init.constant_(self.linear.bias, 0.0 if prior is None else -math.log((1 - prior) / prior))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(x))

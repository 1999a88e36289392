"""Learning-rate schedules (no Lightning: the training modules and any other loop use the same numbers)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, lr: float = 1.0, final_lr: float = 0.0) -> float:
    """Linear warmup 0 -> lr over ``warmup_steps``, then half-cosine from lr to ``final_lr`` at ``total_steps``.

    With the defaults, the multiplier of a base learning rate (1 -> 0).
    """
    if step < warmup_steps:
        return lr * step / max(1, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final_lr + (lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

"""Linear probes on frozen features (paper §4, linear evaluation; Table 5; docs/vatt.md §7).

The protocol, as the authors' evaluation does it and `docs/` states:
- features: the pooled ``[AGG]`` output of the modality's Transformer (before the
  FAC heads) of a frozen backbone (``probe.features`` can pick ``va``/``vt``);
- training: one un-augmented, centred clip per video; test: 4 windows linearly
  spaced over the video, class probabilities averaged per video;
- classifier: multinomial logistic regression (full-batch L-BFGS) on standardised
  features; its L2 strength is chosen on a held-out part of the training split
  from a log-spaced grid, then the classifier is refit on all training videos;
- every official split/fold is evaluated and the mean is reported.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from vatt.metrics import average_views, topk_accuracy

log = logging.getLogger(__name__)

L2_GRID = tuple(10.0**e for e in range(-6, 1))  # strength of the mean-squared weight penalty


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Zero mean, unit variance per dimension, with the training set's statistics."""
    mean, std = train.mean(0), train.std(0).clamp(min=1e-6)
    return [(x - mean) / std for x in (train, *others)]


def fit_logistic_regression(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int = 300
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean cross-entropy + ``l2``·‖W‖² over ``W`` ``[D, C]``, ``b`` ``[C]`` (float64, L-BFGS).

    Convex, so the result depends only on the data and ``l2``, not on the start.
    """
    x, y = x.double(), y.long()
    w = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + l2 * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def predict_proba(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x.double() @ w + b, dim=-1)


def select_l2(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, grid: tuple[float, ...] = L2_GRID, holdout: float = 0.2,
    seed: int = 0,
) -> tuple[float, dict[float, float]]:
    """The L2 strength with the best top-1 on a held-out ``holdout`` fraction of the training set (ties: stronger)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=g)
    n_val = max(1, int(round(holdout * len(y))))
    val, fit = order[:n_val], order[n_val:]
    x_fit, x_val = standardise(x[fit], x[val])
    scores = {}
    for l2 in grid:
        w, b = fit_logistic_regression(x_fit, y[fit], num_classes, l2)
        scores[l2] = float((predict_proba(x_val, w, b).argmax(-1) == y[val]).float().mean())
    best = max(scores.items(), key=lambda kv: (kv[1], kv[0]))[0]
    return best, scores


def linear_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, num_classes: int,
    grid: tuple[float, ...] = L2_GRID, seed: int = 0,
) -> dict[str, float]:
    """Train on ``train_x`` ``[N, D]`` (one view per video), test on ``test_x`` ``[M, V, D]`` (V views per video).

    Returns video-level ``top1``/``top5`` (probabilities averaged over the views) and the chosen ``l2``.
    """
    if test_x.ndim != 3:
        raise ValueError(f"test features must be [videos, views, dim], got {list(test_x.shape)}")
    l2, scores = select_l2(train_x, train_y, num_classes, grid, seed=seed)
    m, v, d = test_x.shape
    x_train, x_test = standardise(train_x, test_x.reshape(m * v, d))
    w, b = fit_logistic_regression(x_train, train_y, num_classes, l2)
    probs = average_views(predict_proba(x_test, w, b), v)
    metrics = topk_accuracy(probs, test_y, ks=(1, 5))
    metrics["l2"] = l2
    log.info("linear probe: l2=%g (held-out top-1 %s), test top-1 %.4f", l2,
             " ".join(f"{k:g}:{s:.3f}" for k, s in scores.items()), metrics["top1"])
    return metrics


def chance_top1(labels: torch.Tensor) -> float:
    """Top-1 of always answering the most frequent class (a floor to compare against)."""
    return float(torch.bincount(labels.long()).max()) / max(1, len(labels)) if len(labels) else math.nan

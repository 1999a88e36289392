"""Evaluation metrics of VATT's downstream protocols, as plain functions of tensors.

* Classification (Kinetics, Moments in Time, UCF101, HMDB51, ESC-50):
  :func:`average_views` of the test views per video, then :func:`topk_accuracy`.
* Multi-label audio classification (AudioSet): :func:`multilabel_metrics` (mAP, AUC, d'),
  with :func:`multihot` to build the targets.
* Zero-shot retrieval (video-audio, text-video): :func:`retrieval_metrics`, and
  :func:`window_retrieval_metrics` for clips evaluated as several windows.

Classification metrics go through ``torchmetrics``; retrieval keeps the project's own
R@K/MedR because torchmetrics' ``RetrievalRecall`` breaks ties by position (optimistically
for whichever item comes first) and has no median rank, whereas here ties count against the
query.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    multiclass_accuracy,
    multilabel_auroc,
    multilabel_average_precision,
)

# --------------------------------------------------------------------------- classification

# R@10 by chance (10 / clips) above this, i.e. fewer than 100 clips: a validation that is a smoke test, not a measurement
SMOKE_CHANCE = 0.1


def average_views(scores: torch.Tensor, num_views: int) -> torch.Tensor:
    """Mean of the per-view scores of each video.

    ``scores``: ``[N * V, C]`` laid out video-major (the ``V`` views of video 0 first, then
    video 1, ...), e.g. the logits (fine-tuning) or class probabilities (linear probe) of the
    4 temporal x 3 spatial test crops. Returns ``[N, C]``.
    """
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if scores.ndim != 2 or scores.shape[0] % num_views != 0:
        raise ValueError(
            f"expected scores of shape [N * {num_views}, C], got {tuple(scores.shape)} "
            f"({scores.shape[0] if scores.ndim else 0} rows are not a multiple of {num_views} views)"
        )
    if not scores.is_floating_point():
        scores = scores.float()
    return scores.reshape(-1, num_views, scores.shape[1]).mean(dim=1)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy over videos: fraction whose label is among the ``k`` highest scores.

    ``logits``: ``[N, C]`` (one row per video, e.g. after :func:`average_views`; any monotone
    scores work), ``labels``: ``[N]`` integer class ids. Returns ``{"top1": ..., "top5": ...}``
    (one key ``f"top{k}"`` per ``k``). A ``k`` larger than ``C`` is clamped to ``C`` (so it is
    1.0), which keeps ``top5`` defined for datasets or tests with fewer than 5 classes.
    """
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"expected logits [N, C] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    num_classes = logits.shape[1]
    return {
        f"top{k}": multiclass_accuracy(
            logits.float(), labels.long(), num_classes=num_classes, top_k=min(k, num_classes), average="micro"
        ).item()
        for k in ks
    }


# --------------------------------------------------------------------------- multi-label


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
                           multilabel: bool) -> dict[str, float]:
    """The test metrics of a classifier over the videos that could be read.

    ``logits`` ``[N, C]`` (views already averaged), ``labels`` ``[N]`` class ids or
    ``[N, C]`` multi-hot, ``valid`` ``[N]`` bool. Single-label: ``top1``/``top5``;
    multi-label (sigmoid of the logits): ``mAP``, ``AUC``, ``d_prime``; and ``num_videos``.
    """
    valid = valid.bool()
    logits, labels = logits[valid].float(), labels[valid]
    if multilabel:
        metrics = multilabel_metrics(torch.sigmoid(logits), labels.float())
    else:
        metrics = topk_accuracy(logits, labels.long(), ks=(1, 5))
    return {**{k: float(v) for k, v in metrics.items()}, "num_videos": float(valid.sum())}


def multihot(labels: Sequence[Sequence[int]], num_classes: int) -> torch.Tensor:
    """``[N, C]`` float targets with 1 at each listed class of each sample (a row may be empty)."""
    rows = [i for i, ls in enumerate(labels) for _ in ls]
    cols = [int(c) for ls in labels for c in ls]
    bad = [c for c in cols if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"class ids {sorted(set(bad))} are outside [0, {num_classes})")
    out = torch.zeros(len(labels), num_classes)
    out[torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)] = 1.0
    return out


def _dense_ranks01(scores: torch.Tensor) -> torch.Tensor:
    """Per-column dense ranks of ``scores`` ``[N, C]``, scaled into ``[0, 1]``.

    torchmetrics applies a sigmoid to scores outside ``[0, 1]``; in float32 every logit above
    ~17 becomes exactly 1.0, which would create ties that the raw scores do not have and change
    AP/AUC. Both metrics depend only on the per-class order (ties included), which dense ranks
    keep exactly (integers below 2**24 are exact in float32).
    """
    sorted_vals, order = scores.sort(dim=0)
    new_value = torch.ones_like(sorted_vals, dtype=torch.long)
    new_value[1:] = (sorted_vals[1:] != sorted_vals[:-1]).long()
    dense = new_value.cumsum(dim=0) - 1  # 0 for the smallest value of each column
    ranks = torch.empty_like(dense).scatter_(0, order, dense).float()
    return ranks / ranks.amax(dim=0).clamp_min(1)


def multilabel_metrics(scores: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """AudioSet-style multi-label metrics: mAP, mean ROC AUC and d'.

    ``scores``: ``[N, C]`` logits or probabilities (only the order within each class matters);
    ``targets``: ``[N, C]`` in {0, 1}. Per-class average precision and ROC AUC come from
    torchmetrics (``average=None``); both are undefined for a class without at least one
    positive and one negative in the evaluated set, so the macro means are over the classes that
    have both, and ``num_classes_scored`` says how many that was (NaN metrics when none).

    ``d_prime`` is the mean over the scored classes of ``sqrt(2) * Phi^-1(AUC_c)`` (``Phi^-1`` the
    standard normal quantile), as the AudioSet literature reports it: the mean of per-class d',
    not the d' of the mean AUC. A class with AUC 1 has d' = +inf (and AUC 0 gives -inf).

    Returns ``{"mAP", "AUC", "d_prime", "num_classes_scored"}``.
    """
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(
            f"expected scores and targets of the same shape [N, C], got {tuple(scores.shape)} and {tuple(targets.shape)}"
        )
    if not ((targets == 0) | (targets == 1)).all():
        raise ValueError("targets must be 0 or 1")
    targets = targets.long()
    positives = targets.sum(dim=0)
    scored = (positives > 0) & (positives < targets.shape[0])
    num_scored = int(scored.sum())
    if num_scored == 0:
        nan = float("nan")
        return {"mAP": nan, "AUC": nan, "d_prime": nan, "num_classes_scored": 0}
    # only the defined classes go to torchmetrics: no NaN/zero placeholders, no warnings
    # ranks come from the scores in their own dtype, so float64 inputs keep their order
    s, t = _dense_ranks01(scores[:, scored]), targets[:, scored]
    if num_scored == 1:  # torchmetrics' multilabel functions require at least 2 labels
        ap = binary_average_precision(s[:, 0], t[:, 0])[None]
        auc = binary_auroc(s[:, 0], t[:, 0])[None]
    else:
        ap = multilabel_average_precision(s, t, num_labels=num_scored, average=None)
        auc = multilabel_auroc(s, t, num_labels=num_scored, average=None)
    d_prime = math.sqrt(2.0) * torch.special.ndtri(auc.double())
    return {
        "mAP": ap.double().mean().item(),
        "AUC": auc.double().mean().item(),
        "d_prime": d_prime.mean().item(),
        "num_classes_scored": num_scored,
    }


# --------------------------------------------------------------------------- retrieval


def similarity_ranks(sim: torch.Tensor) -> torch.Tensor:
    """1-based rank of the diagonal entry within each row of ``sim`` ``[N, N]``; returns ``[N]``.

    Row i holds the scores of query i against every gallery item, item i being its match.
    Ties count against the query (pessimistic): the rank is the number of items scoring at
    least as high as the match, so a constant row ranks its match last.
    """
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"expected a square [N, N] similarity matrix, got {tuple(sim.shape)}")
    target = sim.diagonal()[:, None]
    return (sim >= target).sum(dim=1)


def ranks_to_metrics(ranks: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K (fraction of queries whose match ranks <= K) and median rank of 1-based ``ranks`` ``[N]``.

    Keys ``f"R@{k}"`` and ``"MedR"``; MedR is the usual median (mean of the two middle ranks
    when N is even).
    """
    ranks = ranks.float()
    out = {f"R@{k}": (ranks <= k).float().mean().item() for k in ks}
    out["MedR"] = ranks.quantile(0.5).item()
    return out


def retrieval_ranks(query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """1-based rank of gallery item i for query i under cosine similarity.

    ``query``, ``gallery``: ``[N, D]``; returns ``[N]``. Ties count against the query (pessimistic).
    """
    q, g = F.normalize(query.float(), dim=-1), F.normalize(gallery.float(), dim=-1)
    return similarity_ranks(q @ g.T)


def retrieval_metrics(query: torch.Tensor, gallery: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K (fraction of queries whose match ranks <= K) and median rank.

    ``query``, ``gallery``: ``[N, D]``, query i matching gallery item i (cosine similarity).
    """
    return ranks_to_metrics(retrieval_ranks(query, gallery), ks)


WINDOW_MODES = ("mean_embedding", "mean_similarity")


def window_similarity(text: torch.Tensor, video_windows: torch.Tensor, mode: str) -> torch.Tensor:
    """Cosine text-clip similarity ``[N, N]`` (row: caption, column: clip) for clips seen as W windows.

    ``text``: ``[N, D]``; ``video_windows``: ``[N, W, D]``.
    ``mode="mean_embedding"``: L2-normalise each window embedding, average over the windows,
    re-normalise, then cosine similarity with the text. ``mode="mean_similarity"``: cosine
    similarity of the text with each window, averaged over the windows.
    """
    if text.ndim != 2 or video_windows.ndim != 3 or video_windows.shape[-1] != text.shape[-1]:
        raise ValueError(
            f"expected text [N, D] and video_windows [N, W, D], got {tuple(text.shape)} and {tuple(video_windows.shape)}"
        )
    t = F.normalize(text.float(), dim=-1)
    v = F.normalize(video_windows.float(), dim=-1)
    if mode == "mean_embedding":
        return t @ F.normalize(v.mean(dim=1), dim=-1).T
    if mode == "mean_similarity":
        return torch.einsum("td,nwd->tnw", t, v).mean(dim=-1)
    raise ValueError(f"mode must be one of {WINDOW_MODES}, got {mode!r}")


def window_retrieval_metrics(
    text: torch.Tensor, video_windows: torch.Tensor, mode: str, direction: str = "t2v"
) -> dict[str, float]:
    """Zero-shot text-video retrieval where each clip is evaluated as several windows.

    ``text``: ``[N, D]`` (caption i belongs to clip i); ``video_windows``: ``[N, W, D]``. ``mode``
    is how windows are combined (see :func:`window_similarity`). ``direction="t2v"`` ranks clip
    i among all clips for caption i; ``"v2t"`` ranks caption i among all captions for clip i.
    Returns ``{"R@1", "R@5", "R@10", "MedR"}`` with 1-based, pessimistic-tie ranks.
    """
    sim = window_similarity(text, video_windows, mode)
    if direction == "t2v":
        ranks = similarity_ranks(sim)
    elif direction == "v2t":
        ranks = similarity_ranks(sim.T)
    else:
        raise ValueError(f"direction must be 't2v' or 'v2t', got {direction!r}")
    return ranks_to_metrics(ranks, (1, 5, 10))


def save_metrics_json(metrics: dict[str, float], path: str | Path) -> Path:
    """Write ``metrics`` as one flat JSON object (sorted keys; NaN/inf, e.g. d' at AUC 1, become null)."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in sorted(metrics.items())}
    path = Path(path)
    path.write_text(json.dumps(clean, indent=1) + "\n")
    return path


def write_run_metrics(metrics: dict[str, float], run_dir: str | Path, tensorboard: bool = False) -> Path:
    """A run's ``metrics.json`` (fine-tuning tests and ``make eval`` alike); optionally the same as TensorBoard scalars.

    ``tensorboard``: also write each finite value as a scalar at step 0 under
    ``<run_dir>/tensorboard`` (evaluation runs, which have no Lightning logger).
    """
    import logging

    path = save_metrics_json(metrics, Path(run_dir) / "metrics.json")
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(Path(run_dir) / "tensorboard")) as writer:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    writer.add_scalar(k, v, 0)
    logging.getLogger("vatt.metrics").info("metrics: %s", path)
    return path

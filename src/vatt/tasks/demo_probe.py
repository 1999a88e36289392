"""A linear probe of the demo dataset's labels on its validation clips: downstream progress during pretraining.

The demo data (``vatt.data.demo``) labels every clip by colour, shape and motion.
For each label, the frozen pooled ``[AGG]`` features of the validation clips (one
centred view each) are split in two halves (even / odd clips); a
logistic-regression probe (``vatt.tasks.linear_probe``) is trained on one half and
tested on the other, and the other way round. The score is the mean of the two
top-1 accuracies, reported with the top-1 of always answering the most frequent
class (``chance``). ``vatt.lightning.callbacks.DemoProbe`` runs it during
pretraining and logs the scores as ``probe/*``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from vatt.data.clip import ClipConfig
from vatt.data.downstream import list_dataset
from vatt.data.labeled import LabeledClipDataset
from vatt.models import VATT
from vatt.tasks.features import extract
from vatt.tasks.linear_probe import chance_top1, linear_probe

LABELS = ("colour", "shape", "motion")


def two_fold_top1(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    """Mean top-1 of a linear probe trained on the even clips and tested on the odd ones, and the other way round."""
    halves = (torch.arange(len(y)) % 2 == 0, torch.arange(len(y)) % 2 == 1)
    top1 = [linear_probe(x[a], y[a], x[b][:, None], y[b], num_classes)["top1"] for a, b in (halves, halves[::-1])]
    return sum(top1) / 2


def demo_probe(model: VATT, root: str | Path, clip: ClipConfig, labels: Sequence[str] = LABELS,
               modality: str = "video", batch_size: int = 32) -> dict[str, float]:
    """``<label>_top1`` and ``<label>_chance`` for every label of the demo folder ``root``'s validation clips.

    ``model`` runs in eval mode on the device of its parameters; ``clip`` is the clip
    geometry it was trained with. Raises
    ``FileNotFoundError`` / ``ValueError`` when ``root`` holds no demo-like data.
    """
    metrics: dict[str, float] = {}
    features = None
    for label in labels:
        listing = list_dataset("demo", root, label=label)
        items = listing.splits[0].test
        if features is None:  # the clips are the same for every label: encode them once
            ds = LabeledClipDataset(items, modality, clip, "single", len(listing.classes))
            features = extract(model, ds, "agg", batch_size, 0, next(model.parameters()).device)
        targets = torch.tensor([int(i.label) for i in items])
        valid = features["valid"]
        x, y = features["features"][valid, 0], targets[valid]
        metrics[f"{label}_top1"] = two_fold_top1(x, y, len(listing.classes))
        metrics[f"{label}_chance"] = chance_top1(y)
    return metrics

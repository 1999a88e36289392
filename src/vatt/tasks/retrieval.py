"""Zero-shot text <-> video retrieval (paper §4, zero-shot retrieval; docs/vatt.md §7: YouCook2, MSR-VTT).

One caption per clip, compared in the video-text (``vt``) space without any
training on the target set. Each clip is seen through 4 windows linearly spaced
over it (YouCook2: over the annotated segment); the authors report two ways of
combining them, both computed here:
- ``mean_embedding``: the clip's embedding is the mean of its L2-normalised window
  embeddings (re-normalised); reported as ``t2v_*`` / ``v2t_*``;
- ``mean_similarity``: the caption's cosine similarity with each window, averaged;
  reported as ``t2v_meansim_*`` / ``v2t_meansim_*``.
R@1/5/10 and the median rank (1-based; ties count against the query).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vatt.metrics import window_retrieval_metrics

VARIANTS = {"mean_embedding": "", "mean_similarity": "meansim_"}


def retrieval_metrics_from_features(text: torch.Tensor, video_windows: torch.Tensor) -> dict[str, float]:
    """``text`` ``[N, D]`` (caption i describes clip i), ``video_windows`` ``[N, W, D]`` -> every metric, both variants."""
    text = F.normalize(text.float(), dim=-1)
    video_windows = F.normalize(video_windows.float(), dim=-1)
    out = {}
    for mode, tag in VARIANTS.items():
        for direction in ("t2v", "v2t"):
            for k, v in window_retrieval_metrics(text, video_windows, mode=mode, direction=direction).items():
                out[f"{direction}_{tag}{k}"] = v
    return out

"""VATT's contrastive losses: NCE (video-audio) and MIL-NCE (video-text).

This module owns all cross-device gathering. Under ``torch.distributed`` with
more than one rank, embeddings and masks are gathered from every rank *with
gradient* and each rank computes the loss of its own rows only ("local loss"),
scaled so that the mean over ranks equals the single-process loss on the global
batch and DDP's gradient averaging reproduces the single-process gradient.
Ranks must hold the same number of clips (``drop_last`` / equal shards).

Logits and log-sum-exp are computed in float32, also under autocast.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient and returns this rank's slice.

    Written with all_reduce so it works on gloo (CPU) as well as NCCL.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.world = dist.get_rank(), dist.get_world_size()
        ctx.n = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(ctx.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def world_info() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0, differentiable; identity on one process."""
    _, world = world_info()
    if world == 1:
        return x
    if x.dtype == torch.bool:
        return _GatherWithGrad.apply(x.to(torch.uint8)).to(torch.bool)
    return _GatherWithGrad.apply(x)


def _normalize32(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


def _masked(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    # A finite floor, not -inf: a row with nothing left would give NaN gradients.
    return logits.masked_fill(~keep, torch.finfo(logits.dtype).min)


def _local_mean(per_row: torch.Tensor, valid: torch.Tensor, valid_global: torch.Tensor, world: int) -> torch.Tensor:
    """Sum of valid local rows scaled so that the mean over ranks is the global mean."""
    total = torch.where(valid, per_row, torch.zeros_like(per_row)).sum()
    return total * world / valid_global.sum().clamp(min=1)


def nce_loss(
    x: torch.Tensor, y: torch.Tensor, temperature: float = 0.07, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric NCE between paired embeddings (video-audio in VATT).

    ``x``, ``y``: ``[B, D]``; ``mask``: ``[B]`` bool, False rows are neither anchors
    nor negatives. With S = x̂ŷᵀ/τ over valid rows,
    loss_i = logsumexp(concat(S[i, :], S[:, i])) - S[i, i]; the mean over valid i.
    """
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"nce_loss needs x and y of the same shape [B, D], got {list(x.shape)} and {list(y.shape)}")
    _, world = world_info()
    b = x.shape[0]
    valid = torch.ones(b, dtype=torch.bool, device=x.device) if mask is None else mask.to(torch.bool)
    with torch.autocast(device_type=x.device.type, enabled=False):
        xn, yn = _normalize32(x), _normalize32(y)  # b, D (local rows)
        xa, ya, valid_all = gather(xn), gather(yn), gather(valid)  # N, D / N
        rows = xn @ ya.T / temperature  # b, N: S[i, :]
        cols = yn @ xa.T / temperature  # b, N: S[:, i]
        logits = _masked(torch.cat([rows, cols], dim=1), valid_all.repeat(2)[None, :])
        pos = (xn * yn).sum(-1) / temperature  # S[i, i]
        per_row = torch.logsumexp(logits, dim=1) - pos
        return _local_mean(per_row, valid, valid_all, world)


def mil_nce_loss(
    video: torch.Tensor, text: torch.Tensor, temperature: float = 0.07, text_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """MIL-NCE between each clip and its K captions.

    ``video``: ``[B, D]``; ``text``: ``[B, K, D]``; ``text_mask``: ``[B, K]`` bool,
    False captions are excluded everywhere. With S[i, j, k] = v̂_i·t̂_jk/τ, for each
    clip i with at least one caption:
    loss_i = logsumexp(S[i, j, k] over present (j, k) ++ S[j, i, k] over all j, present k)
             - logsumexp over present k of S[i, i, k];
    the mean over clips with captions.
    """
    if video.ndim != 2 or text.ndim != 3 or text.shape[0] != video.shape[0] or text.shape[2] != video.shape[1]:
        raise ValueError(
            f"mil_nce_loss needs video [B, D] and text [B, K, D], got {list(video.shape)} and {list(text.shape)}"
        )
    _, world = world_info()
    b, k, _ = text.shape
    if text_mask is None:
        present = torch.ones(b, k, dtype=torch.bool, device=video.device)
    else:
        if text_mask.shape != (b, k):
            raise ValueError(f"text_mask must be [B, K] = {[b, k]}, got {list(text_mask.shape)}")
        present = text_mask.to(torch.bool)
    with torch.autocast(device_type=video.device.type, enabled=False):
        vn, tn = _normalize32(video), _normalize32(text)  # b, D / b, K, D
        va, ta, present_all = gather(vn), gather(tn), gather(present)  # N, D / N, K, D / N, K
        v2t = torch.einsum("id,jkd->ijk", vn, ta) / temperature  # b, N, K: S[i, j, k]
        t2v = torch.einsum("jd,ikd->ijk", va, tn) / temperature  # b, N, K: S[j, i, k]
        v2t = _masked(v2t, present_all[None])
        t2v = _masked(t2v, present[:, None, :])
        denom = torch.logsumexp(torch.cat([v2t.reshape(b, -1), t2v.reshape(b, -1)], dim=1), dim=1)
        pos = _masked(torch.einsum("id,ikd->ik", vn, tn) / temperature, present)  # b, K: S[i, i, k]
        per_row = denom - torch.logsumexp(pos, dim=1)
        has_text = present.any(-1)
        return _local_mean(per_row, has_text, present_all.any(-1), world)

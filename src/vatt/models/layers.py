"""Building blocks shared by every VATT backbone.

Plain ``nn.Module``s with plain-number constructor arguments; no Lightning or
Hydra in here. Shapes in comments: B batch, N tokens, C channels (model width),
H heads.
"""

from __future__ import annotations

import functools
import math
import sys

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6  # VATT uses LayerNorm eps 1e-6 everywhere (docs/vatt.md §1)


def keep_mask(shape: tuple[int, ...], p: float, generator: torch.Generator | None = None,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """A boolean mask, each entry False (dropped) with probability ``p``, at a third of ``uniform_``'s cost.

    One 32-bit draw of ``random_`` (31 random bits) gives two 16-bit halves: the low
    half is uniform over 2^16 values, the high half over 2^15; each is compared with
    its own threshold, so ``p`` is quantised to 1/32768 (0.1 -> 0.100006).
    """
    n = math.prod(shape)
    bits = torch.empty((n + 1) // 2, dtype=torch.int32, device=device).random_(generator=generator)
    halves = bits.view(torch.int16).view(-1, 2)  # little-endian: [low, high]
    low, high = round(p * 65536) - 32768, round(p * 32768)
    thresholds = torch.tensor([low, high], dtype=torch.int16, device=device)
    if sys.byteorder == "big":
        thresholds = thresholds.flip(0)
    return torch.ge(halves, thresholds).view(-1)[:n].view(shape)


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose CPU training mask comes from ``keep_mask`` (PyTorch's ``bernoulli_`` costs ~6 ns an entry on CPU).

    Same semantics (zero with probability ``p``, scale the rest by 1/(1-p)), same
    state dict; GPUs and eval mode use ``nn.Dropout`` itself.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.p > 0 and x.device.type == "cpu") or self.p >= 1:
            return super().forward(x)
        return torch.mul(x, keep_mask(x.shape, self.p, device=x.device)).mul_(1.0 / (1.0 - self.p))


class _ChunkedDropoutAttention(torch.autograd.Function):
    """softmax(q kᵀ·scale) with dropout on the probabilities, then @ v — computed a block of queries at a time.

    PyTorch's fused CPU attention kernels do not support dropout, and its fallback
    materialises several [B, H, N, N] tensors per layer; each is a fresh >32 MB
    allocation that Linux maps and zero-fills page by page, so a training step spent
    much of its time in the kernel. Working on ``chunk`` queries at a time keeps every
    temporary small (reused by the allocator, hot in cache). q, k, v are made
    contiguous once (the batched GEMMs would otherwise copy them for every block);
    only the probabilities and the keep-mask are kept for backward, one block per
    query chunk, and the scalars (``scale``, ``1/(1-p)``) are folded into the
    [N, D]-sized operands instead of the [N, N] ones. The keep-mask comes from
    ``keep_mask`` (16 random bits per entry).
    The semantics are those of ``F.scaled_dot_product_attention(..., dropout_p=p)``:
    each probability is zeroed with probability ``p`` and the rest scaled by 1/(1-p).
    """

    @staticmethod
    def forward(ctx, q, k, v, p: float, scale: float, chunk: int, generator):  # q, k, v: B, H, N, D
        B, H, N, D = q.shape
        qs = (q * scale).reshape(B * H, N, D)  # the scale on the [N, D] operand; contiguous
        kc, vc = k.reshape(B * H, N, D).contiguous(), v.reshape(B * H, N, D).contiguous()
        kt = kc.transpose(1, 2)
        out = q.new_empty(B * H, N, D)
        saved = []
        for i in range(0, N, chunk):
            j = min(N, i + chunk)
            probs = torch.softmax(torch.bmm(qs[:, i:j], kt), dim=-1)  # BH, c, N
            keep = keep_mask(probs.shape, p, generator, probs.device)
            torch.bmm(probs * keep, vc, out=out[:, i:j])
            saved += [probs, keep]
        out.mul_(1.0 / (1.0 - p))  # 1/(1-p) on the [N, D] output
        ctx.save_for_backward(qs, kc, vc, *saved)
        ctx.p, ctx.scale, ctx.chunk, ctx.shape = p, scale, chunk, (B, H, N, D)
        return out.view(B, H, N, D)

    @staticmethod
    def backward(ctx, grad):
        qs, kc, vc, *saved = ctx.saved_tensors
        p, scale, chunk, (B, H, N, D) = ctx.p, ctx.scale, ctx.chunk, ctx.shape
        keep_scale = 1.0 / (1.0 - p)
        grad = grad.reshape(B * H, N, D).contiguous()
        dq, dk, dv = torch.empty_like(qs), torch.zeros_like(kc), torch.zeros_like(vc)
        vt = vc.transpose(1, 2)
        for n, i in enumerate(range(0, N, chunk)):
            j = min(N, i + chunk)
            pc, mc, gc = saved[2 * n], saved[2 * n + 1], grad[:, i:j]
            dv.baddbmm_((pc * mc).transpose(1, 2), gc)  # times 1/(1-p) below
            ds = torch.bmm(gc, vt).mul_(mc).mul_(pc)  # (g vᵀ ⊙ keep) ⊙ P, times 1/(1-p) below
            ds.addcmul_(pc, ds.sum(-1, keepdim=True), value=-1.0)  # softmax backward
            torch.bmm(ds, kc, out=dq[:, i:j])
            dk.baddbmm_(ds.transpose(1, 2), qs[:, i:j])  # qs carries one factor of scale
        dv.mul_(keep_scale)
        dq.mul_(keep_scale * scale)
        dk.mul_(keep_scale)
        return dq.view(B, H, N, D), dk.view(B, H, N, D), dv.view(B, H, N, D), None, None, None, None


def chunked_dropout_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float, scale: float | None = None,
                              chunk: int = 128, generator: torch.Generator | None = None) -> torch.Tensor:
    """Attention with dropout ``p`` on the probabilities, query blocks of ``chunk``; ``[B, H, N, D]`` in and out."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return _ChunkedDropoutAttention.apply(q, k, v, p, scale, chunk, generator)


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``.

    ``scale=None`` is the usual 1/sqrt(head_dim); the T5 text encoder passes
    ``scale=1.0`` because T5 folds the scaling into its initialisation. Training on
    CPU with attention dropout (no fused kernel supports it there) goes through
    ``chunked_dropout_attention`` unless ``chunked_dropout=False``; GPUs keep
    SDPA's fused kernels, which apply the dropout inside. ``explicit = True`` (set by
    ``vatt.serving`` while it exports) spells inference attention out as
    softmax(q·kᵀ·scale + bias)·v: the ONNX exporter's decomposition of a masked SDPA
    gives a tensor layout its following reshape cannot view.
    """

    chunked_dropout = True
    explicit = False

    def __init__(
        self,
        dim: int,
        num_heads: int,
        bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = scale
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.proj_drop = Dropout(proj_drop)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # B, H, N, C/H each
        drop = self.attn_drop if self.training else 0.0
        if drop > 0 and attn_bias is None and x.device.type == "cpu" and self.chunked_dropout:
            x = chunked_dropout_attention(q, k, v, drop, self.scale)
        elif self.explicit and drop == 0:
            scores = (q @ k.transpose(-2, -1)) * (self.head_dim**-0.5 if self.scale is None else self.scale)
            x = torch.softmax(scores if attn_bias is None else scores + attn_bias.to(q.dtype), dim=-1) @ v
        else:
            if attn_bias is not None:
                # SDPA wants the additive mask in the query dtype (bf16 under autocast).
                attn_bias = attn_bias.to(q.dtype)
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=drop, scale=self.scale)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """Linear -> exact GELU -> dropout -> Linear."""

    def __init__(self, dim: int, hidden_dim: int, bias: bool = True, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = nn.GELU()
        self.drop = Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` that normalises in float32 whatever its input's dtype, returning that dtype.

    CPU autocast leaves layer norms alone, so a bf16 activation would meet the fp32
    weight and fall off the fused kernel (PyTorch warns about it on every step);
    float32 statistics are also what mixed-precision training wants.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float32, torch.float64):
            return super().forward(x)
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` in float32 whatever its input's dtype, as ``LayerNorm`` above (T5 computes it in float32 too)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float32, torch.float64):
            return super().forward(x)
        return F.rms_norm(x.float(), self.normalized_shape, self.weight, self.eps).to(x.dtype)


NORMS = ("layer", "layer_nobias", "rms")


def make_norm(kind: str, dim: int) -> nn.Module:
    """``"layer"`` (LayerNorm: ViT-style encoders), ``"layer_nobias"`` (LayerNorm with a scale but no
    bias: the T5 text encoder's feed-forward norm in the authors' code) or ``"rms"`` (T5's RMS norm)."""
    if kind == "layer":
        return LayerNorm(dim, eps=LN_EPS)
    if kind == "layer_nobias":
        return LayerNorm(dim, eps=LN_EPS, bias=False)
    if kind == "rms":
        return RMSNorm(dim, eps=LN_EPS)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class Block(nn.Module):
    """Pre-norm Transformer block (paper §3.3; docs/vatt.md §1).

    ``x = x + drop(attn(norm1(x)))``; ``x = x + drop(W2(drop(gelu(W1(norm2(x))))))``.
    ``norm`` is norm1's kind, ``mlp_norm`` norm2's (default: the same).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        drop: float = 0.1,
        attn_drop: float = 0.1,
        bias: bool = True,
        norm: str = "layer",
        attn_scale: float | None = None,
        mlp_norm: str | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, dim)
        self.attn = Attention(dim, num_heads, bias=bias, attn_drop=attn_drop, proj_drop=drop, scale=attn_scale)
        self.norm2 = make_norm(mlp_norm or norm, dim)
        self.mlp = Mlp(dim, mlp_dim, bias=bias, drop=drop)
        self.drop = Dropout(drop)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attn_bias)
        return x + self.drop(self.mlp(self.norm2(x)))


class Transformer(nn.Module):
    """A stack of pre-norm blocks followed by a final norm.

    ``mlp_norm`` sets the kind of each block's feed-forward norm (default ``norm``).
    ``grad_checkpointing = True`` recomputes each block in backward
    (activation checkpointing) to trade compute for memory.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_dim: int,
        drop: float = 0.1,
        attn_drop: float = 0.1,
        bias: bool = True,
        norm: str = "layer",
        attn_scale: float | None = None,
        mlp_norm: str | None = None,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_dim, drop, attn_drop, bias, norm, attn_scale, mlp_norm) for _ in range(depth)
        )
        self.norm = make_norm(norm, dim)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, attn_bias, use_reentrant=False)
            else:
                x = blk(x, attn_bias)
        return self.norm(x)


def keep_count(num_tokens: int, rate: float) -> int:
    """Tokens DropToken keeps out of ``num_tokens`` at drop ``rate``: round((1-rate)*N), at least 1."""
    return max(1, int(round((1.0 - rate) * num_tokens)))


class DropToken(nn.Module):
    """Randomly drop a fraction ``rate`` of the tokens during training (VATT §3.4).

    Per-sample (default): each sample keeps its own random subset, indices drawn
    on the tokens' device (no host sync). ``per_sample=False``: one subset for
    the whole batch, as the TF release does. Identity in eval mode or at rate 0.
    Kept tokens stay in their original order.
    """

    def __init__(self, rate: float = 0.5, per_sample: bool = True) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"droptoken rate is the fraction of tokens dropped and must be in [0, 1), got {rate}")
        self.rate = rate
        self.per_sample = per_sample

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B, N, C -> B, n_keep, C
        if not self.training or self.rate == 0.0:
            return x
        B, N, C = x.shape
        keep = keep_count(N, self.rate)
        noise = torch.rand(B if self.per_sample else 1, N, device=x.device)
        idx = noise.topk(keep, dim=1, sorted=False).indices.sort(dim=1).values  # B|1, keep
        idx = idx.expand(B, keep)
        return x.gather(1, idx.unsqueeze(-1).expand(B, keep, C))

    def extra_repr(self) -> str:
        return f"rate={self.rate}, per_sample={self.per_sample}"


RESIZE_MODES = ("spline", "linear")


@functools.lru_cache(maxsize=64)
def _spline_matrix(n: int, m: int) -> torch.Tensor:
    """The ``[m, n]`` matrix that resamples an ``n``-row table to ``m`` rows with the authors' spline (float64).

    The authors' ``ExpandableEmbedding`` fits a polyharmonic spline of order 3 (kernel
    |x − c|³ plus a linear term, no smoothing: TensorFlow Addons' ``interpolate_spline``)
    through rows placed at c_j = j / n and reads it at q_i = i / m; in one dimension this
    is the natural cubic spline through the rows, extended linearly past the last one.
    The fit is linear in the table, so it is one matrix per (n, m).
    """
    c = torch.arange(n, dtype=torch.float64) / n
    q = torch.arange(m, dtype=torch.float64) / m
    lhs = torch.zeros(n + 2, n + 2, dtype=torch.float64)
    lhs[:n, :n] = (c[:, None] - c[None, :]).abs() ** 3
    lhs[:n, n], lhs[:n, n + 1] = c, 1.0
    lhs[n, :n], lhs[n + 1, :n] = c, 1.0
    basis = torch.cat([(q[:, None] - c[None, :]).abs() ** 3, q[:, None], torch.ones(m, 1, dtype=torch.float64)], 1)
    return basis @ torch.linalg.inv(lhs)[:, :n]  # m, n


def resize_table(table: torch.Tensor, length: int, mode: str = "spline") -> torch.Tensor:
    """Resample a position table ``[N, C]`` to ``[length, C]``, to read clips of another resolution or length.

    ``"spline"``: the authors' cubic spline (``_spline_matrix``; shrinking 8 rows to 4
    keeps rows 0, 2, 4, 6). ``"linear"``: linear interpolation with half-pixel centres
    (``align_corners=False``, like ``tf.image.resize``). Differentiable in ``table``.
    """
    if table.shape[0] == length:
        return table
    if mode == "spline":
        matrix = _spline_matrix(table.shape[0], length).to(table.device)
        return (matrix @ table.double()).to(table.dtype)
    if mode != "linear":
        raise ValueError(f"position_resize={mode!r}: choose one of {RESIZE_MODES}")
    out = F.interpolate(table.T.unsqueeze(0).float(), size=length, mode="linear", align_corners=False)
    return out[0].T.to(table.dtype)


class SpatioTemporalPositions(nn.Module):
    """Factorised learnable video positions (paper §3.1; docs/vatt.md §2).

    Temporal, vertical and horizontal tables are summed per (t, h, w) position,
    LayerNorm is applied to that sum, the result is added to the tokens, then
    dropout.
    """

    def __init__(self, dim: int, grid: tuple[int, int, int], drop: float = 0.1, resize: str = "spline") -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.resize = resize
        self.temporal = nn.Parameter(torch.zeros(grid[0], dim))
        self.vertical = nn.Parameter(torch.zeros(grid[1], dim))
        self.horizontal = nn.Parameter(torch.zeros(grid[2], dim))
        self.norm = LayerNorm(dim, eps=LN_EPS)
        self.drop = Dropout(drop)

    def forward(self, x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:  # B, t*h*w, C
        t, h, w = grid
        pos = (
            resize_table(self.temporal, t, self.resize)[:, None, None]
            + resize_table(self.vertical, h, self.resize)[None, :, None]
            + resize_table(self.horizontal, w, self.resize)[None, None, :]
        )  # t, h, w, C
        pos = self.norm(pos.reshape(t * h * w, -1))
        return self.drop(x + pos)


class TemporalPositions(nn.Module):
    """One learnable position table with LayerNorm on it (audio; text of the MA model).

    ``interpolate=True`` resizes the table to other sequence lengths (audio);
    ``False`` takes the first N rows and refuses longer inputs (text words).
    """

    def __init__(self, dim: int, length: int, drop: float = 0.1, interpolate: bool = True,
                 resize: str = "spline") -> None:
        super().__init__()
        self.length = length
        self.interpolate = interpolate
        self.resize = resize
        self.table = nn.Parameter(torch.zeros(length, dim))
        self.norm = LayerNorm(dim, eps=LN_EPS)
        self.drop = Dropout(drop)

    def forward(self, x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:  # B, N, C
        (n,) = grid
        if self.interpolate:
            table = resize_table(self.table, n, self.resize)
        elif n <= self.length:
            table = self.table[:n]
        else:
            raise ValueError(f"input has {n} tokens but the position table holds {self.length}; raise max_words")
        return self.drop(x + self.norm(table))


def t5_relative_position_bucket(
    relative_position: torch.Tensor,
    bidirectional: bool = True,
    num_buckets: int = 32,
    max_distance: int = 64,
) -> torch.Tensor:
    """T5's bucketing of ``key_pos - query_pos``: exact for small distances, log-spaced beyond.

    Bidirectional: half of the buckets are for keys after the query.
    """
    ret = torch.zeros_like(relative_position)
    n = -relative_position
    if bidirectional:
        num_buckets //= 2
        ret = ret + (n < 0).long() * num_buckets
        n = n.abs()
    else:
        n = n.clamp(min=0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    large = max_exact + (
        torch.log(n.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    large = large.clamp(max=num_buckets - 1)
    return ret + torch.where(is_small, n, large)


class RelativePositionBias(nn.Module):
    """T5 relative position bias: one learned scalar per head and bucket."""

    def __init__(self, num_heads: int, num_buckets: int = 32, max_distance: int = 64) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def forward(self, length: int, device: torch.device) -> torch.Tensor:  # -> 1, H, N, N
        pos = torch.arange(length, device=device)
        buckets = t5_relative_position_bucket(pos[None, :] - pos[:, None], True, self.num_buckets, self.max_distance)
        return self.embedding(buckets).permute(2, 0, 1).unsqueeze(0)


class VideoPatchEmbed(nn.Module):
    """Non-overlapping 3-D patches (t x h x w x 3) embedded linearly by a Conv3d."""

    def __init__(self, dim: int, patch_size: tuple[int, int, int] = (4, 16, 16), in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        if x.ndim != 5 or x.shape[1] != self.proj.in_channels:
            raise ValueError(f"video must be [B, 3, T, H, W], got shape {list(x.shape)}")
        pt, ph, pw = self.patch_size
        _, _, T, H, W = x.shape
        if T % pt or H % ph or W % pw:
            raise ValueError(
                f"video [T={T}, H={H}, W={W}] is not divisible by video_patch_size {list(self.patch_size)}; "
                "crop or resize the clip, or change video_patch_size"
            )
        B = x.shape[0]
        t, h, w = T // pt, H // ph, W // pw
        # A Conv3d with kernel = stride is one GEMM over non-overlapping patches: cut them out and apply the
        # kernel as a linear layer (several times faster than the CPU convolution; the same weights and numbers).
        patches = x.reshape(B, -1, t, pt, h, ph, w, pw).permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(B, t * h * w, -1)
        weight = self.proj.weight.reshape(self.proj.out_channels, -1)  # C, 3*pt*ph*pw in (c, kt, kh, kw) order
        return F.linear(patches, weight, self.proj.bias), (t, h, w)  # B, t*h*w, C in (t, h, w) order


class AudioSegmentEmbed(nn.Module):
    """Raw waveform cut into segments of ``segment`` samples, each embedded linearly."""

    def __init__(self, dim: int, segment: int = 128) -> None:
        super().__init__()
        self.segment = segment
        self.proj = nn.Linear(segment, dim)  # same as Conv1d(kernel=stride=segment)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int]]:
        if x.ndim != 2:
            raise ValueError(f"audio must be a mono waveform [B, S], got shape {list(x.shape)}")
        B, S = x.shape
        if S % self.segment:
            raise ValueError(
                f"audio has {S} samples, not a multiple of audio_patch_size {self.segment}; "
                "crop/pad the waveform or change audio_patch_size"
            )
        n = S // self.segment
        return self.proj(x.reshape(B, n, self.segment)), (n,)

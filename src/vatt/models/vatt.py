"""VATT: Video-Audio-Text Transformer (Akbari et al., NeurIPS 2021).

One file, top to bottom: modality encoders (video/audio patches, T5 text),
the common-space (FAC) heads, the full model, then the preset table and
``create_model``. Sizes and compositions are data (``SIZES``, ``PRESETS``), not
subclasses. docs/vatt.md states the paper facts these follow.

Shapes: B batch, K captions per clip, L words, N tokens, C width.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (
    RESIZE_MODES,
    AudioSegmentEmbed,
    Dropout,
    DropToken,
    RelativePositionBias,
    SpatioTemporalPositions,
    TemporalPositions,
    Transformer,
    VideoPatchEmbed,
)
from .word_vectors import word_vector_table

# --------------------------------------------------------------------------- encoders


class LinearGELU(nn.Sequential):
    """Linear + exact GELU: the MA model's pre/post projections, the text input projection."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True) -> None:
        super().__init__(nn.Linear(in_dim, out_dim, bias=bias), nn.GELU())


class ModalityEncoder(nn.Module):
    """Tokens -> positions -> DropToken -> prepend [AGG] -> Transformer -> pooled [AGG].

    Serves video and audio of the modality-specific models and all three
    modalities of the modality-agnostic (MA) model, where ``transformer`` is one
    module shared by the three encoders and ``pre_proj``/``post_proj`` are
    Linear+GELU.

    ``forward_features`` returns every output token ``[B, 1+N, C]`` (index 0 is
    [AGG]); ``forward`` returns the pooled ``[B, C]`` feature.
    """

    def __init__(
        self,
        embed: nn.Module,
        pos_embed: nn.Module,
        transformer: Transformer,
        embed_dim: int,
        droptoken: DropToken | None = None,
        pre_proj: nn.Module | None = None,
        post_proj: nn.Module | None = None,
        final_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed = embed
        self.pre_proj = pre_proj if pre_proj is not None else nn.Identity()
        self.pos_embed = pos_embed
        self.droptoken = droptoken if droptoken is not None else nn.Identity()
        self.agg_token = nn.Parameter(torch.zeros(1, 1, transformer.dim))
        self.transformer = transformer
        # the authors' encoders apply dropout to the output of the final LayerNorm
        self.final_drop = Dropout(final_drop)
        self.post_proj = post_proj if post_proj is not None else nn.Identity()
        self.embed_dim = embed_dim

    def forward_features(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        tokens, grid = self.embed(x)  # B, N, C
        tokens = self.pos_embed(self.pre_proj(tokens), grid)
        if padding_mask is None:
            tokens = self.droptoken(tokens)
            attn_bias = None
        else:
            # Only text carries padding; DropToken is never used with it.
            attn_bias = padding_bias(padding_mask)
        agg = self.agg_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        x = self.transformer(torch.cat([agg, tokens], dim=1), attn_bias)  # B, 1+N, C
        return self.post_proj(self.final_drop(x))

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_features(x, padding_mask)[:, 0]


def padding_bias(padding_mask: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` bool (True = real word) -> additive key mask ``[B, 1, 1, 1+L]``; [AGG] always visible."""
    keep = F.pad(padding_mask, (1, 0), value=True)
    bias = torch.zeros(keep.shape, dtype=torch.float32, device=keep.device)
    return bias.masked_fill(~keep, float("-inf"))[:, None, None, :]


class WordEmbed(nn.Module):
    """Word ids ``[B, L]`` -> vectors ``[B, L, word_dim]``; id 0 is padding.

    Trainable by default; ``load_vectors`` fills it from a word2vec/GloVe file and
    can freeze it (the original uses frozen word2vec).
    """

    def __init__(self, vocab_size: int, word_dim: int = 300) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(vocab_size, word_dim))

    def load_vectors(self, path: str | Path, vocab: Sequence[str], freeze: bool = True) -> int:
        if len(vocab) != self.weight.shape[0]:
            raise ValueError(f"vocab has {len(vocab)} words but vocab_size is {self.weight.shape[0]}")
        table, found = word_vector_table(path, vocab, self.weight.shape[1])
        with torch.no_grad():
            self.weight.copy_(table)
        self.weight.requires_grad_(not freeze)
        return found

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, tuple[int]]:
        return F.embedding(ids, self.weight), (ids.shape[1],)


class T5TextEncoder(nn.Module):
    """The modality-specific text encoder (paper §3.1, §3.3; docs/vatt.md §2).

    word vectors (300-d) -> prepend a 300-d [AGG] -> bias-free Linear + GELU to
    the width -> T5 Transformer: RMS norm before attention, a bias-free LayerNorm
    (mean subtracted) before the feed-forward layer (``mlp_norm``, the authors'
    code; ``"rms"`` gives plain T5), no biases, no 1/sqrt(d) score scaling,
    relative position bias (32 buckets, max distance 64) computed once and shared
    by all layers -> final RMS norm -> dropout. No absolute positions.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_dim: int,
        word_dim: int = 300,
        drop: float = 0.1,
        attn_drop: float = 0.1,
        num_buckets: int = 32,
        max_distance: int = 64,
        mlp_norm: str = "layer_nobias",
    ) -> None:
        super().__init__()
        self.embed = WordEmbed(vocab_size, word_dim)
        self.agg_token = nn.Parameter(torch.zeros(1, 1, word_dim))
        self.proj = LinearGELU(word_dim, dim, bias=False)
        self.drop = Dropout(drop)
        self.rel_pos = RelativePositionBias(num_heads, num_buckets, max_distance)
        self.transformer = Transformer(
            dim, depth, num_heads, mlp_dim, drop, attn_drop, bias=False, norm="rms", attn_scale=1.0, mlp_norm=mlp_norm
        )
        self.embed_dim = dim

    def forward_features(self, ids: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        words, _ = self.embed(ids)  # B, L, 300
        agg = self.agg_token.expand(words.shape[0], -1, -1).to(words.dtype)
        x = self.drop(self.proj(torch.cat([agg, words], dim=1)))  # B, 1+L, C
        attn_bias = self.rel_pos(x.shape[1], x.device) + padding_bias(padding_mask)  # B, H, 1+L, 1+L
        return self.drop(self.transformer(x, attn_bias))

    def forward(self, ids: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        return self.forward_features(ids, padding_mask)[:, 0]


# --------------------------------------------------------------------------- heads


class FACHead(nn.Module):
    """Fine-and-coarse common-space projections (paper §3.4; docs/vatt.md §4).

    video -> va: Linear(no bias) -> BN -> ReLU -> Linear(no bias) -> BN
    va -> vt:    ReLU -> Linear(no bias) -> BN
    audio -> va: Linear;   text -> vt: Linear.
    No L2 normalisation here: the losses and retrieval normalise. Under DDP
    convert BN with ``nn.SyncBatchNorm.convert_sync_batchnorm`` (Lightning's
    ``sync_batchnorm=True`` does).
    """

    def __init__(self, video_dim: int, audio_dim: int, text_dim: int, va_dim: int = 512, vt_dim: int = 256) -> None:
        super().__init__()
        self.video_to_va = nn.Sequential(
            nn.Linear(video_dim, va_dim, bias=False),
            nn.BatchNorm1d(va_dim),
            nn.ReLU(),
            nn.Linear(va_dim, va_dim, bias=False),
            nn.BatchNorm1d(va_dim),
        )
        self.va_to_vt = nn.Sequential(nn.ReLU(), nn.Linear(va_dim, vt_dim, bias=False), nn.BatchNorm1d(vt_dim))
        self.audio_to_va = nn.Linear(audio_dim, va_dim)
        self.text_to_vt = nn.Linear(text_dim, vt_dim)

    def video(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # B, C -> (B, va), (B, vt)
        va = self.video_to_va(x)
        return va, self.va_to_vt(va)

    def audio(self, x: torch.Tensor) -> torch.Tensor:
        return self.audio_to_va(x)

    def text(self, x: torch.Tensor) -> torch.Tensor:
        return self.text_to_vt(x)


# --------------------------------------------------------------------------- model


class VATT(nn.Module):
    """Video, audio and text encoders plus the FAC heads.

    ``forward(video=None, audio=None, text=None, text_mask=None)`` takes any
    subset of modalities:

    - ``video``: float ``[B, 3, T, H, W]`` in [-1, 1]
    - ``audio``: float ``[B, S]`` raw mono waveform
    - ``text``: int64 ``[B, L]`` or ``[B, K, L]`` word ids, 0 = padding
    - ``text_mask``: bool ``[B]`` or ``[B, K]``, False where a clip/caption has
      no text (AudioSet clips); captions of only padding count as missing too.

    Returns pooled features ``video`` ``[B, Cv]``, ``audio`` ``[B, Ca]``, ``text``
    ``[B, Ct]`` / ``[B, K, Ct]``, projections ``video_va`` ``[B, 512]``,
    ``video_vt`` ``[B, 256]``, ``audio_va`` ``[B, 512]``, ``text_vt`` ``[B, (K,) 256]``
    and, with text, the resolved ``text_mask`` ``[B, (K)]``.
    """

    def __init__(self, video: ModalityEncoder, audio: ModalityEncoder, text: nn.Module, heads: FACHead) -> None:
        super().__init__()
        self.video = video
        self.audio = audio
        self.text = text
        self.heads = heads

    @property
    def modality_agnostic(self) -> bool:
        return self.video.transformer is self.audio.transformer

    def encode_video(self, video: torch.Tensor, space: str | None = None, normalize: bool = False) -> torch.Tensor:
        """``[B, 3, T, H, W]`` in [-1, 1] -> the pooled [AGG] feature ``[B, Cv]`` (``space=None``),
        or its common-space embedding: ``"va"`` ``[B, 512]`` (video-audio) or ``"vt"`` ``[B, 256]``
        (video-text); ``normalize=True`` L2-normalises (what retrieval compares)."""
        feature = self.video(video)
        if space is None:
            out = feature
        else:
            va, vt = self.heads.video(feature)
            out = {"va": va, "vt": vt}.get(space)
            if out is None:
                raise ValueError(f"encode_video: space={space!r}; choose None, 'va' or 'vt'")
        return F.normalize(out, dim=-1) if normalize else out

    def encode_audio(self, audio: torch.Tensor, space: str | None = None, normalize: bool = False) -> torch.Tensor:
        """``[B, S]`` mono waveform -> pooled feature ``[B, Ca]``, ``space="va"`` ``[B, 512]``, or ``space="vt"``
        ``[B, 256]``: the va embedding through the FAC head's va -> vt projection (trained on video only; an
        extension for audio zero-shot classification, docs/deviations.md)."""
        out = self.audio(audio)
        if space in ("va", "vt"):
            out = self.heads.audio(out)
            if space == "vt":
                out = self.heads.va_to_vt(out)
        elif space is not None:
            raise ValueError(f"encode_audio: space={space!r}; choose None, 'va' or 'vt' (va -> vt projection)")
        return F.normalize(out, dim=-1) if normalize else out

    def encode_text(self, text: torch.Tensor, space: str | None = None, normalize: bool = False) -> torch.Tensor:
        """``[..., L]`` word ids (0 = padding) -> pooled text features ``[..., Ct]``, or ``space="vt"`` ``[..., 256]``."""
        if text.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"text must hold integer word ids, got dtype {text.dtype}")
        lead = text.shape[:-1]
        ids = text.reshape(-1, text.shape[-1])
        out = self.text(ids, ids != 0)
        if space == "vt":
            out = self.heads.text(out)
        elif space is not None:
            raise ValueError(f"encode_text: space={space!r}; choose None or 'vt' (text lives in the video-text space)")
        out = out.reshape(*lead, out.shape[-1])
        return F.normalize(out, dim=-1) if normalize else out

    TOWERS = ("video", "audio", "text", "heads")

    def freeze(self, *towers: str) -> VATT:
        """Stop gradients to the named towers (``video``, ``audio``, ``text``, ``heads``; none named: all).

        Returns the model. In the modality-agnostic model the three towers share one
        Transformer, so freezing any of them freezes it. ``model.requires_grad_(True)``
        undoes it. Dropout and BatchNorm still follow ``train()``/``eval()``.
        """
        unknown = sorted(set(towers) - set(self.TOWERS))
        if unknown:
            raise ValueError(f"freeze: unknown tower(s) {unknown}; choose from {list(self.TOWERS)}")
        for name in towers or self.TOWERS:
            getattr(self, name).requires_grad_(False)
        return self

    def forward(
        self,
        video: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        if video is None and audio is None and text is None:
            raise ValueError("VATT.forward needs at least one of video=, audio=, text=")
        out: dict[str, torch.Tensor] = {}
        if video is not None:
            out["video"] = self.encode_video(video)
            out["video_va"], out["video_vt"] = self.heads.video(out["video"])
        if audio is not None:
            out["audio"] = self.encode_audio(audio)
            out["audio_va"] = self.heads.audio(out["audio"])
        if text is not None:
            out["text"] = self.encode_text(text)
            out["text_vt"] = self.heads.text(out["text"])
            out["text_mask"] = resolve_text_mask(text, text_mask)
        return out


def resolve_text_mask(text: torch.Tensor, text_mask: torch.Tensor | None) -> torch.Tensor:
    """Caption-level mask ``text.shape[:-1]``: a caption counts when it has a word and its clip/caption mask is True."""
    present = (text != 0).any(-1)
    if text_mask is None:
        return present
    text_mask = text_mask.to(torch.bool)
    if text_mask.ndim == present.ndim - 1:
        text_mask = text_mask.unsqueeze(-1)
    if text_mask.ndim != present.ndim:
        raise ValueError(f"text_mask must be [B] or {list(present.shape)}, got {list(text_mask.shape)}")
    return present & text_mask


# --------------------------------------------------------------------------- presets

# Transformer sizes (paper §3.3, docs/vatt.md §1; head dim 64). "tiny" is ours, for tests and CPU demos.
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(depth=2, dim=128, num_heads=2, mlp_dim=512),
    "small": dict(depth=6, dim=512, num_heads=8, mlp_dim=2048),
    "base": dict(depth=12, dim=768, num_heads=12, mlp_dim=3072),
    "medium": dict(depth=12, dim=1024, num_heads=16, mlp_dim=4096),
    "large": dict(depth=24, dim=1024, num_heads=16, mlp_dim=4096),
}

# Paper input geometry: 32 frames of 224^2 at 10 fps, 3.2 s of 48 kHz audio, 16 words.
PAPER_INPUT = dict(num_frames=32, image_size=224, audio_samples=153_600, max_words=16)
# Tiny input geometry: 8 frames of 64^2 (0.8 s at 10 fps), 0.8 s of 16 kHz audio.
TINY_INPUT = dict(num_frames=8, image_size=64, audio_samples=12_800, max_words=16)

# Compositions (video / audio / text size), or one shared size for the MA model.
PRESETS: dict[str, dict] = {
    "tiny": dict(video_size="tiny", audio_size="tiny", text_size="tiny", **TINY_INPUT),
    "bbs": dict(video_size="base", audio_size="base", text_size="small", **PAPER_INPUT),
    "mbs": dict(video_size="medium", audio_size="base", text_size="small", **PAPER_INPUT),
    "lbs": dict(video_size="large", audio_size="base", text_size="small", **PAPER_INPUT),
    "ma_medium": dict(shared_size="medium", **PAPER_INPUT),
    "ma_tiny": dict(shared_size="tiny", post_proj_dim=128, **TINY_INPUT),
}


Size = str | dict  # a name in SIZES, or {"depth", "dim", "num_heads", "mlp_dim"} (e.g. read off a checkpoint)


def size_spec(size: Size) -> dict[str, int]:
    """The numbers of a Transformer size given by name or as a dict."""
    if isinstance(size, str):
        return SIZES[size]
    return {k: int(size[k]) for k in ("depth", "dim", "num_heads", "mlp_dim")}


@dataclass
class VATTConfig:
    """Every constructor argument of a VATT model; ``create_model`` overrides fill it."""

    video_size: Size = "medium"
    audio_size: Size = "base"
    text_size: Size = "small"
    shared_size: Size | None = None  # set -> modality-agnostic model, one Transformer of this size
    num_frames: int = 32
    image_size: int = 224
    video_patch_size: tuple[int, int, int] = (4, 16, 16)
    audio_samples: int = 153_600
    audio_patch_size: int = 128
    max_words: int = 16
    vocab_size: int = 2**16
    word_dim: int = 300
    droptoken: float = 0.5
    droptoken_per_sample: bool = True
    dropout: float = 0.1
    attn_dropout: float = 0.1
    va_dim: int = 512
    vt_dim: int = 256
    post_proj_dim: int = 1024  # MA model only
    num_buckets: int = 32  # T5 text only
    max_distance: int = 64
    # the authors' layer details (docs/vatt.md); the alternatives are switches
    t5_mlp_norm: str = "layer"  # norm before the T5 feed-forward layer: LayerNorm with offset; "layer_nobias", "rms"
    final_dropout: bool = True  # dropout after the video/audio/MA encoders' final LayerNorm
    init: str = "tf"  # "tf": Glorot/N(0, d^-0.5) as the authors; "vit": truncated normal(0.02)
    position_resize: str = "spline"  # position tables read at another geometry: the authors' cubic spline, or "linear"

    def validate(self) -> None:
        for key in ("video_size", "audio_size", "text_size") if self.shared_size is None else ("shared_size",):
            size = getattr(self, key)
            if isinstance(size, dict):
                if set(size) != {"depth", "dim", "num_heads", "mlp_dim"} or not all(
                        isinstance(v, int) and v > 0 for v in size.values()) or size["dim"] % size["num_heads"]:
                    raise ValueError(f"{key}={size!r}: give depth, dim, num_heads (dividing dim) and mlp_dim as "
                                     "positive integers, or a size name")
            elif size not in SIZES:
                raise ValueError(f"{key}={size!r} is not a size; choose one of {sorted(SIZES)} or a dict of numbers")
        if self.position_resize not in RESIZE_MODES:
            raise ValueError(f"position_resize={self.position_resize!r}: choose one of {RESIZE_MODES}")
        if not 0.0 <= self.droptoken < 1.0:
            raise ValueError(f"droptoken={self.droptoken}: it is the fraction of video/audio tokens dropped, in [0, 1)")
        pt, ph, pw = self.video_patch_size
        if self.num_frames % pt or self.image_size % ph or self.image_size % pw:
            raise ValueError(
                f"num_frames={self.num_frames}, image_size={self.image_size} are not divisible by "
                f"video_patch_size={list(self.video_patch_size)}"
            )
        if self.audio_samples % self.audio_patch_size:
            raise ValueError(f"audio_samples={self.audio_samples} is not a multiple of audio_patch_size={self.audio_patch_size}")
        for key in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"{key}={getattr(self, key)} must be in [0, 1)")
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size={self.vocab_size}: needs at least padding (0) and one word")
        if self.t5_mlp_norm not in ("layer_nobias", "layer", "rms"):
            raise ValueError(f"t5_mlp_norm={self.t5_mlp_norm!r}: choose layer_nobias, layer or rms")
        if self.init not in INIT_SCHEMES:
            raise ValueError(f"init={self.init!r}: choose one of {INIT_SCHEMES}")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> VATTConfig:
        """Preset ``name`` (``tiny``, ``bbs``, ``mbs``, ``lbs``, ``ma_medium``, ``ma_tiny``) with ``overrides``."""
        if name not in PRESETS:
            raise ValueError(f"unknown model {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**PRESETS[name]).with_overrides(overrides, f"model {name!r}")

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> VATTConfig:
        """A config as ``dataclasses.asdict`` wrote it (keys of later versions are left out, missing keys default)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls().with_overrides({k: v for k, v in stored.items() if k in fields}, "stored config")

    def with_overrides(self, overrides: dict[str, Any], who: str = "model") -> VATTConfig:
        """This config with ``overrides`` (``VATTConfig`` fields; any other key is an error naming the valid ones)."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise TypeError(f"{who}: unknown override(s) {unknown}; valid: {sorted(fields)}")
        if "video_patch_size" in overrides:
            overrides = {**overrides, "video_patch_size": tuple(overrides["video_patch_size"])}
        return dataclasses.replace(self, **overrides)

    @property
    def video_grid(self) -> tuple[int, int, int]:
        pt, ph, pw = self.video_patch_size
        return (self.num_frames // pt, self.image_size // ph, self.image_size // pw)


def _modality_encoder(cfg: VATTConfig, modality: str, shared: Transformer | None = None) -> nn.Module:
    """The encoder of one modality: its own Transformer (modality-specific), or ``shared``'s (the MA model).

    An MA-style encoder (``cfg.shared_size``) has Linear+GELU projections before and
    after the Transformer; with ``shared=None`` it gets a Transformer of its own (a
    tower fine-tuned from the MA model).
    """
    drop, adrop, final = cfg.dropout, cfg.attn_dropout, (cfg.dropout if cfg.final_dropout else 0.0)
    n_audio = cfg.audio_samples // cfg.audio_patch_size

    def droptoken() -> DropToken:
        return DropToken(cfg.droptoken, cfg.droptoken_per_sample)

    if cfg.shared_size is not None:
        d, post = size_spec(cfg.shared_size)["dim"], cfg.post_proj_dim
        tx = shared if shared is not None else Transformer(**size_spec(cfg.shared_size), drop=drop, attn_drop=adrop)
        if modality == "video":
            return ModalityEncoder(VideoPatchEmbed(d, cfg.video_patch_size),
                                   SpatioTemporalPositions(d, cfg.video_grid, drop, cfg.position_resize),
                                   tx, post, droptoken(), LinearGELU(d, d), LinearGELU(d, post), final)
        if modality == "audio":
            return ModalityEncoder(AudioSegmentEmbed(d, cfg.audio_patch_size),
                                   TemporalPositions(d, n_audio, drop, resize=cfg.position_resize),
                                   tx, post, droptoken(), LinearGELU(d, d), LinearGELU(d, post), final)
        return ModalityEncoder(WordEmbed(cfg.vocab_size, cfg.word_dim),
                               TemporalPositions(d, cfg.max_words, drop, interpolate=False),
                               tx, post, None, LinearGELU(cfg.word_dim, d), LinearGELU(d, post), final)
    if modality == "text":
        t = size_spec(cfg.text_size)
        return T5TextEncoder(cfg.vocab_size, t["dim"], t["depth"], t["num_heads"], t["mlp_dim"], cfg.word_dim, drop,
                             adrop, cfg.num_buckets, cfg.max_distance, cfg.t5_mlp_norm)
    spec = size_spec(cfg.video_size if modality == "video" else cfg.audio_size)
    tx = Transformer(**spec, drop=drop, attn_drop=adrop)
    if modality == "video":
        return ModalityEncoder(VideoPatchEmbed(spec["dim"], cfg.video_patch_size),
                               SpatioTemporalPositions(spec["dim"], cfg.video_grid, drop, cfg.position_resize),
                               tx, spec["dim"], droptoken(), final_drop=final)
    return ModalityEncoder(AudioSegmentEmbed(spec["dim"], cfg.audio_patch_size),
                           TemporalPositions(spec["dim"], n_audio, drop, resize=cfg.position_resize),
                           tx, spec["dim"], droptoken(), final_drop=final)


def build_vatt(cfg: VATTConfig) -> VATT:
    """Build a VATT model from a validated config."""
    cfg.validate()
    shared = None
    if cfg.shared_size is not None:
        shared = Transformer(**size_spec(cfg.shared_size), drop=cfg.dropout, attn_drop=cfg.attn_dropout)
    video, audio, text = (_modality_encoder(cfg, m, shared) for m in ("video", "audio", "text"))
    heads = FACHead(video.embed_dim, audio.embed_dim, text.embed_dim, cfg.va_dim, cfg.vt_dim)
    model = VATT(video, audio, text, heads)
    init_weights(model, cfg.init)
    model.config = cfg  # what rebuilds this model: dataclasses.asdict(model.config) is stored with its weights
    return model


class TowerClassifier(nn.Module):
    """One tower + dropout + a linear head: clips -> logits ``[B, C]`` (the authors' fine-tuned classifiers).

    ``forward`` takes video ``[B, 3, T, H, W]`` in [-1, 1] or audio ``[B, S]``, as
    ``VATT.encode_video`` / ``encode_audio`` do; the head reads the pooled [AGG] feature.
    """

    def __init__(self, tower: nn.Module, head: nn.Module, modality: str) -> None:
        super().__init__()
        if modality not in ("video", "audio"):
            raise ValueError(f"modality={modality!r}: a classifier reads video or audio")
        self.tower, self.head, self.modality = tower, head, modality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tower(x))


def build_tower_classifier(cfg: VATTConfig, modality: str, num_classes: int, dropout: float | None = None,
                           multilabel: bool = False) -> TowerClassifier:
    """A ``TowerClassifier`` for ``cfg``'s ``modality`` tower (dropout: 0.5 video, 0 audio, as the authors)."""
    from .heads import ClassifierHead

    cfg.validate()
    tower = _modality_encoder(cfg, modality)
    init_weights(tower, cfg.init)
    dropout = (0.5 if modality == "video" else 0.0) if dropout is None else dropout
    model = TowerClassifier(tower, ClassifierHead(tower.embed_dim, num_classes, dropout,
                                                  1.0 / num_classes if multilabel else None), modality)
    model.config = cfg
    return model


INIT_SCHEMES = ("tf", "vit")


def _glorot_normal_(t: torch.Tensor) -> None:
    """Glorot-normal as TensorFlow draws it: truncated at 2 std, with the std corrected for the truncation.

    ``[AGG]`` tokens are vectors: fan_in = fan_out = their width, so std = sqrt(1 / width).
    """
    std = (1.0 / t.shape[-1]) ** 0.5 / 0.87962566103423978  # the std of a normal truncated at +-2 std is 0.8796x
    nn.init.trunc_normal_(t, std=std, a=-2 * std, b=2 * std)


def init_weights(model: nn.Module, scheme: str = "tf") -> None:
    """Initialise a VATT model (docs/vatt.md §2).

    ``"tf"`` (the authors' code): Glorot-uniform dense and convolution kernels
    (std sqrt(2 / (fan_in + fan_out))), Glorot-normal ``[AGG]`` tokens, N(0, d^-0.5)
    position tables; the T5 text encoder's query weights are further scaled by
    head_dim^-0.5, T5's way of scaling scores it does not divide by sqrt(head_dim). ``"vit"``: truncated normal(0.02) for all of them. Both: zero
    biases, unit norm scales, T5 relative-position tables truncated normal(0.02), and
    word vectors unit-normal like word2vec rows with a zero padding row.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init={scheme!r}: choose one of {INIT_SCHEMES}")
    tf = scheme == "tf"
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv3d)):
            if tf:
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.RMSNorm, nn.BatchNorm1d)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.trunc_normal_(m.weight, std=0.02)
        elif isinstance(m, WordEmbed):
            with torch.no_grad():
                nn.init.normal_(m.weight, std=1.0)
                m.weight[0].zero_()
        elif isinstance(m, (SpatioTemporalPositions, TemporalPositions)):
            for p in m.parameters(recurse=False):
                if tf:
                    nn.init.normal_(p, std=p.shape[-1] ** -0.5)
                else:
                    nn.init.trunc_normal_(p, std=0.02)
        elif isinstance(m, (ModalityEncoder, T5TextEncoder)):
            for p in m.parameters(recurse=False):  # the [AGG] token
                if tf:
                    _glorot_normal_(p)
                else:
                    nn.init.trunc_normal_(p, std=0.02)
    if tf:
        # T5 attention has no 1/sqrt(head_dim) on its scores; T5 folds that factor into the query's initial
        # weights instead. Without it, Glorot-sized queries and keys saturate the text attention at the start.
        for m in model.modules():
            if isinstance(m, T5TextEncoder):
                for blk in m.transformer.blocks:
                    with torch.no_grad():
                        blk.attn.qkv.weight[: blk.attn.head_dim * blk.attn.num_heads].mul_(blk.attn.head_dim**-0.5)


def create_model(name: str, **overrides) -> VATT:
    """Build a named VATT model: ``tiny``, ``bbs``, ``mbs``, ``lbs``, ``ma_medium`` (and ``ma_tiny``).

    Overrides are ``VATTConfig`` fields (``droptoken``, ``droptoken_per_sample``,
    ``vocab_size``, ``num_frames``, ``image_size``, ``video_patch_size``,
    ``audio_samples``, ``audio_patch_size``, ``max_words``, ``dropout``,
    ``attn_dropout``, ``va_dim``, ``vt_dim``, ...), plus:

    - ``word_vectors``: path to a word2vec (text/binary) or GloVe file, with
    - ``vocab``: the word list (index = id, index 0 = padding) to look up, and
    - ``freeze_word_embeddings`` (default True when ``word_vectors`` is given).
    """
    word_vectors = overrides.pop("word_vectors", None)
    vocab = overrides.pop("vocab", None)
    freeze = overrides.pop("freeze_word_embeddings", True)
    model = build_vatt(VATTConfig.from_preset(name, **overrides))
    if word_vectors is not None:
        if vocab is None:
            raise ValueError("word_vectors needs vocab= (the word list whose index is the word id)")
        embed = model.text.embed
        embed.load_vectors(word_vectors, list(vocab), freeze=freeze)
    return model


def list_models() -> list[str]:
    return sorted(PRESETS)


def count_parameters(model: nn.Module, trainable_only: bool = True, exclude_word_table: bool = False) -> int:
    """Unique parameters (a shared Transformer counts once)."""
    skip = {id(m.weight) for m in model.modules() if isinstance(m, WordEmbed)} if exclude_word_table else set()
    return sum(p.numel() for p in model.parameters() if (p.requires_grad or not trainable_only) and id(p) not in skip)

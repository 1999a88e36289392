"""The authors' TensorFlow VATT checkpoints -> this project's models, tensor by tensor.

The authors' release (google-research ``vatt/``) saves ``tf.train.Checkpoint(model=...,
optimizer=...)``, so a variable's key is the path of Python attributes that leads to
it, e.g. ``model/layer_with_weights-0/_base_layer/vid_backbone/_base/tx/layers/0/mha/q/
kernel/.ATTRIBUTES/VARIABLE_VALUE``. Each tower is found by a path only it has below
its root (``voxel_to_patch/kernel`` for the video Transformer, ``wave_to_patch/kernel``
for audio, ``base_lm/final_layer_norm/weight`` for the T5 text encoder,
``raw_to_embeddings/video/kernel`` for the modality-agnostic model, ``vid_to_hid/kernel``
for the FAC heads, ``_ops/cls/kernel`` for a fine-tuned classifier), so the outer
prefix may differ. The architecture is read off the shapes: widths, depths (layers
present), heads (64 dimensions each; the T5 bias table says how many text heads),
feed-forward widths, patch sizes, position-table lengths (hence the clip geometry),
vocabulary and word-vector sizes, head widths.

Layout changes (docs/deviations.md "Weights from TensorFlow"): Dense kernels are
``[in, out]`` (transposed to ``nn.Linear``'s ``[out, in]``); the separate q, k, v
layers are stacked into one ``qkv``; the Conv3D kernel ``[t, h, w, 3, D]`` becomes
``[D, 3, t, h, w]``, the audio Conv1D kernel ``[128, 1, D]`` a ``Linear(128, D)``;
Keras LayerNorm's gamma/beta are weight/bias, BatchNorm's moving mean/variance the
running statistics; [AGG] vectors get their ``[1, 1, D]`` shape. Optimizer slots,
the step counters, ``save_counter`` and the object graph are not weights and are
left out; any other tensor that finds no place, and any model tensor that is not
filled, is an error that names them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vatt.models.vatt import SIZES, VATTConfig, size_spec

from .bundle import TensorBundle

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
HEAD_DIM = 64  # every VATT Transformer uses 64-dimensional heads (d_kv)
# what identifies each part, as a path below its root
MARKERS = {
    "video": "voxel_to_patch/kernel",
    "audio": "wave_to_patch/kernel",
    "text": "base_lm/final_layer_norm/weight",
    "unified": "raw_to_embeddings/video/kernel",
    "heads": "vid_to_hid/kernel",
    "classifier": "_ops/cls/kernel",
}


class ConversionError(ValueError):
    """A checkpoint that does not convert; the message names the tensors and what to do."""


def _is_weight(key: str) -> bool:
    """Whether a checkpoint key is a model variable (not an optimizer slot, a counter or the object graph)."""
    return (key.endswith(SUFFIX) and not key.startswith(("optimizer/", "save_counter/"))
            and "/.OPTIMIZER_SLOT/" not in key)


@dataclass
class Source:
    """One model tensor and the checkpoint tensors (keys without the common suffix) it is made from."""

    target: str
    keys: list[str]
    make: Callable[..., np.ndarray]


@dataclass
class Plan:
    """What a checkpoint converts to: its kind, the model's config, and where every tensor goes."""

    kind: str  # "pretrained" or "classifier"
    config: VATTConfig
    modality: str | None = None  # a classifier's tower
    num_classes: int | None = None
    sources: list[Source] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # checkpoint weights with no place in the model
    ignored: list[str] = field(default_factory=list)  # optimizer state, counters, the object graph
    roots: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- layout changes


def linear(kernel: np.ndarray) -> np.ndarray:
    return kernel.T


def same(x: np.ndarray) -> np.ndarray:
    return x


def stacked(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """q, k, v kernels ``[in, out]`` (or biases) -> one ``qkv`` weight ``[3·out, in]`` (or bias)."""
    return np.concatenate([x.T if x.ndim == 2 else x for x in (q, k, v)], axis=0)


def conv3d(kernel: np.ndarray) -> np.ndarray:
    return kernel.transpose(4, 3, 0, 1, 2)  # t, h, w, C, D -> D, C, t, h, w


def conv1d_as_linear(kernel: np.ndarray) -> np.ndarray:
    return kernel[:, 0, :].T  # segment, 1, D -> D, segment


def token(x: np.ndarray) -> np.ndarray:
    return x.reshape(1, 1, -1)


# --------------------------------------------------------------------------- reading the architecture


class _Keys:
    def __init__(self, bundle: TensorBundle) -> None:
        self.bundle = bundle
        self.shapes = {k[: -len(SUFFIX)]: bundle.shape(k) for k in bundle.keys() if _is_weight(k)}

    def shape(self, key: str) -> tuple[int, ...]:
        if key not in self.shapes:
            raise ConversionError(f"the checkpoint has no tensor {key}{SUFFIX}; run `make convert ... list=1` to see "
                                  "what it holds")
        return self.shapes[key]

    def has(self, key: str) -> bool:
        return key in self.shapes

    def roots(self, marker: str) -> list[str]:
        return sorted(k[: -len(marker)] for k in self.shapes if k.endswith(marker)
                      and (marker != MARKERS["video"] or "raw_to_embeddings" not in k))

    def layers(self, prefix: str) -> int:
        found = {int(m.group(1)) for k in self.shapes if (m := re.match(re.escape(prefix) + r"(\d+)/", k))}
        if not found or found != set(range(len(found))):
            raise ConversionError(f"the layers under {prefix} are not numbered 0..N-1: {sorted(found)}")
        return len(found)


def _size(depth: int, dim: int, heads: int, mlp: int) -> str | dict[str, int]:
    """A named size when the shapes are one of the paper's, else the numbers themselves."""
    spec = dict(depth=depth, dim=dim, num_heads=heads, mlp_dim=mlp)
    return next((name for name, s in SIZES.items() if s == spec), spec)


def _heads(dim: int, where: str) -> int:
    if dim % HEAD_DIM:
        raise ConversionError(f"{where}: width {dim} is not a multiple of VATT's {HEAD_DIM}-dimensional heads")
    return dim // HEAD_DIM


def _tx_size(keys: _Keys, tx: str) -> str | dict[str, int]:
    dim = keys.shape(f"{tx}layers/0/mha/q/kernel")[0]
    return _size(keys.layers(f"{tx}layers/"), dim, _heads(dim, tx), keys.shape(f"{tx}layers/0/feed_forward/mlp/wi/kernel")[1])


def _only(keys: _Keys, part: str) -> str | None:
    roots = keys.roots(MARKERS[part])
    if len(roots) > 1:
        raise ConversionError(f"the checkpoint holds {len(roots)} {part} parts ({roots}); convert one model at a time")
    return roots[0] if roots else None


# --------------------------------------------------------------------------- where each tensor goes


def _transformer(out: str, tx: str, depth: int, t5: bool = False) -> list[Source]:
    """A pre-norm Transformer stack: ``out`` = our module path, ``tx`` = its checkpoint prefix."""
    s: list[Source] = []
    for i in range(depth):
        ours, theirs = f"{out}.blocks.{i}", f"{tx}layers/{i}/"
        if t5:
            att, n1 = f"{theirs}self_attention/attention/", f"{theirs}self_attention/layer_norm/"
            s += [Source(f"{ours}.norm1.weight", [f"{n1}weight"], same)]
        else:
            att, n1 = f"{theirs}mha/", f"{theirs}layer_norm/"
            s += [Source(f"{ours}.norm1.weight", [f"{n1}gamma"], same), Source(f"{ours}.norm1.bias", [f"{n1}beta"], same)]
        ff = f"{theirs}feed_forward/"
        s += [
            Source(f"{ours}.attn.qkv.weight", [f"{att}{p}/kernel" for p in "qkv"], stacked),
            Source(f"{ours}.attn.proj.weight", [f"{att}o/kernel"], linear),
            Source(f"{ours}.norm2.weight", [f"{ff}layer_norm/gamma"], same),
            Source(f"{ours}.norm2.bias", [f"{ff}layer_norm/beta"], same),
            Source(f"{ours}.mlp.fc1.weight", [f"{ff}mlp/wi/kernel"], linear),
            Source(f"{ours}.mlp.fc2.weight", [f"{ff}mlp/wo/kernel"], linear),
        ]
        if not t5:
            s += [Source(f"{ours}.attn.qkv.bias", [f"{att}{p}/bias" for p in "qkv"], stacked),
                  Source(f"{ours}.attn.proj.bias", [f"{att}o/bias"], same),
                  Source(f"{ours}.mlp.fc1.bias", [f"{ff}mlp/wi/bias"], same),
                  Source(f"{ours}.mlp.fc2.bias", [f"{ff}mlp/wo/bias"], same)]
    if t5:
        s += [Source(f"{out}.norm.weight", [f"{tx}final_layer_norm/weight"], same)]
    else:
        s += [Source(f"{out}.norm.weight", [f"{tx}final_layer_norm/gamma"], same),
              Source(f"{out}.norm.bias", [f"{tx}final_layer_norm/beta"], same)]
    return s


def _layernorm(out: str, ln: str) -> list[Source]:
    return [Source(f"{out}.weight", [f"{ln}gamma"], same), Source(f"{out}.bias", [f"{ln}beta"], same)]


def _dense(out: str, dense: str, bias: bool = True) -> list[Source]:
    return [Source(f"{out}.weight", [f"{dense}kernel"], linear),
            *([Source(f"{out}.bias", [f"{dense}bias"], same)] if bias else [])]


def _video_patches_and_positions(out: str, conv: str, pos: str) -> list[Source]:
    return [Source(f"{out}.embed.proj.weight", [f"{conv}kernel"], conv3d),
            Source(f"{out}.embed.proj.bias", [f"{conv}bias"], same),
            *(Source(f"{out}.pos_embed.{axis}", [f"{pos}{axis}_position_embeddings/embeddings"], same)
              for axis in ("temporal", "vertical", "horizontal")),
            *_layernorm(f"{out}.pos_embed.norm", f"{pos}layernorm/")]


def _audio_patches_and_positions(out: str, conv: str, pos: str) -> list[Source]:
    return [Source(f"{out}.embed.proj.weight", [f"{conv}kernel"], conv1d_as_linear),
            Source(f"{out}.embed.proj.bias", [f"{conv}bias"], same),
            Source(f"{out}.pos_embed.table", [f"{pos}temporal_position_embeddings/embeddings"], same),
            *_layernorm(f"{out}.pos_embed.norm", f"{pos}layernorm/")]


def _tower(modality: str, out: str, root: str, depth: int, projections: bool = False) -> list[Source]:
    """A video (ViTx3D) or audio (WaTx) tower; ``projections``: one fine-tuned from the modality-agnostic model."""
    conv = "voxel_to_patch/" if modality == "video" else "wave_to_patch/"
    embed = _video_patches_and_positions if modality == "video" else _audio_patches_and_positions
    s = [*embed(out, root + conv, root + "pos_embedding_lookup/"), Source(f"{out}.agg_token", [root + "agg_embedding"], token),
         *_transformer(f"{out}.transformer", root + "tx/", depth)]
    if projections:
        s += [*_dense(f"{out}.pre_proj.0", f"{root}pre_proj/"), *_dense(f"{out}.post_proj.0", f"{root}post_proj/")]
    return s


def _heads_sources(root: str) -> list[Source]:
    def bn(out: str, bn_key: str) -> list[Source]:
        return [Source(f"{out}.weight", [f"{bn_key}gamma"], same), Source(f"{out}.bias", [f"{bn_key}beta"], same),
                Source(f"{out}.running_mean", [f"{bn_key}moving_mean"], same),
                Source(f"{out}.running_var", [f"{bn_key}moving_variance"], same)]

    return [*_dense("heads.video_to_va.0", f"{root}vid_to_hid/", bias=False),
            *bn("heads.video_to_va.1", f"{root}hid_to_va/pre_bn/"),
            *_dense("heads.video_to_va.3", f"{root}hid_to_va/dense/", bias=False),
            *bn("heads.video_to_va.4", f"{root}hid_to_va/bn/"),
            *_dense("heads.va_to_vt.1", f"{root}va_to_vat/dense/", bias=False),
            *bn("heads.va_to_vt.2", f"{root}va_to_vat/bn/"),
            *_dense("heads.audio_to_va", f"{root}aud_to_va/"),
            *_dense("heads.text_to_vt", f"{root}txt_to_vat/")]


# --------------------------------------------------------------------------- the plan


def _video_geometry(keys: _Keys, conv: str, pos: str) -> dict[str, Any]:
    kt, kh, kw, _, _ = keys.shape(conv + "kernel")
    t = keys.shape(f"{pos}temporal_position_embeddings/embeddings")[0]
    h = keys.shape(f"{pos}vertical_position_embeddings/embeddings")[0]
    w = keys.shape(f"{pos}horizontal_position_embeddings/embeddings")[0]
    if kh * h != kw * w:
        raise ConversionError(f"{pos}: a {h * kh}x{w * kw} frame grid; this model reads square frames")
    return {"num_frames": t * kt, "image_size": h * kh, "video_patch_size": (kt, kh, kw)}


def _audio_geometry(keys: _Keys, conv: str, pos: str) -> dict[str, Any]:
    segment = keys.shape(conv + "kernel")[0]
    return {"audio_samples": keys.shape(f"{pos}temporal_position_embeddings/embeddings")[0] * segment,
            "audio_patch_size": segment}


def _head_dims(keys: _Keys, root: str) -> dict[str, int]:
    return {"va_dim": keys.shape(f"{root}vid_to_hid/kernel")[1], "vt_dim": keys.shape(f"{root}va_to_vat/dense/kernel")[1]}


def _specific(keys: _Keys, roots: dict[str, str]) -> VATTConfig:
    v, a, t, h = roots["video"], roots["audio"], roots["text"], roots["heads"]
    vocab, word_dim = keys.shape(t + "embedding/embeddings")
    buckets, text_heads = keys.shape(t + "base_lm/layers/0/self_attention/attention/relative_attention_bias/embeddings")
    tsize = _size(keys.layers(t + "base_lm/layers/"), keys.shape(t + "pre_proj/kernel")[1], text_heads,
                  keys.shape(t + "base_lm/layers/0/feed_forward/mlp/wi/kernel")[1])
    return VATTConfig(video_size=_tx_size(keys, v + "tx/"), audio_size=_tx_size(keys, a + "tx/"), text_size=tsize,
                      vocab_size=vocab, word_dim=word_dim, num_buckets=buckets,
                      **_video_geometry(keys, v + "voxel_to_patch/", v + "pos_embedding_lookup/"),
                      **_audio_geometry(keys, a + "wave_to_patch/", a + "pos_embedding_lookup/"), **_head_dims(keys, h))


def _specific_sources(cfg: VATTConfig, roots: dict[str, str]) -> list[Source]:
    v, a, t, h = roots["video"], roots["audio"], roots["text"], roots["heads"]
    tb = t + "base_lm/"
    return [
        *_tower("video", "video", v, size_spec(cfg.video_size)["depth"]),
        *_tower("audio", "audio", a, size_spec(cfg.audio_size)["depth"]),
        Source("text.embed.weight", [t + "embedding/embeddings"], same),
        Source("text.agg_token", [t + "agg_embedding"], token),
        Source("text.proj.0.weight", [t + "pre_proj/kernel"], linear),
        Source("text.rel_pos.embedding.weight", [tb + "layers/0/self_attention/attention/relative_attention_bias/embeddings"],
               same),
        *_transformer("text.transformer", tb, size_spec(cfg.text_size)["depth"], t5=True),
        *_heads_sources(h),
    ]


def _agnostic(keys: _Keys, roots: dict[str, str]) -> VATTConfig:
    u, h = roots["unified"], roots["heads"]
    emb, pos = u + "raw_to_embeddings/", u + "pos_embedding_lookup/"
    vocab, word_dim = keys.shape(emb + "text/embeddings")
    return VATTConfig(shared_size=_tx_size(keys, u + "tx/"), vocab_size=vocab, word_dim=word_dim,
                      max_words=keys.shape(pos + "text/temporal_position_embeddings/embeddings")[0],
                      post_proj_dim=keys.shape(u + "post_proj/video/kernel")[1],
                      **_video_geometry(keys, emb + "video/", pos + "video/"),
                      **_audio_geometry(keys, emb + "audio/", pos + "audio/"), **_head_dims(keys, h))


def _agnostic_sources(cfg: VATTConfig, roots: dict[str, str]) -> list[Source]:
    u, h = roots["unified"], roots["heads"]
    emb, pos = u + "raw_to_embeddings/", u + "pos_embedding_lookup/"
    sources = [
        *_video_patches_and_positions("video", emb + "video/", pos + "video/"),
        *_audio_patches_and_positions("audio", emb + "audio/", pos + "audio/"),
        Source("text.embed.weight", [emb + "text/embeddings"], same),
        Source("text.pos_embed.table", [pos + "text/temporal_position_embeddings/embeddings"], same),
        *_layernorm("text.pos_embed.norm", pos + "text/layernorm/"),
        *_transformer("video.transformer", u + "tx/", size_spec(cfg.shared_size)["depth"]),
        *_heads_sources(h),
    ]
    for m, short in (("video", "vid"), ("audio", "aud"), ("text", "txt")):
        sources += [Source(f"{m}.agg_token", [f"{u}{short}_agg_embedding"], token),
                    *_dense(f"{m}.pre_proj.0", f"{u}pre_proj/{m}/"), *_dense(f"{m}.post_proj.0", f"{u}post_proj/{m}/")]
    return sources


def _classifier(keys: _Keys, roots: dict[str, str]) -> tuple[VATTConfig, list[Source], str, int]:
    c = roots["classifier"]
    modality = "video" if "video" in roots else "audio"
    base = roots[modality]
    size = _tx_size(keys, base + "tx/")
    projected = keys.has(base + "pre_proj/kernel")
    geometry = (_video_geometry(keys, base + "voxel_to_patch/", base + "pos_embedding_lookup/") if modality == "video"
                else _audio_geometry(keys, base + "wave_to_patch/", base + "pos_embedding_lookup/"))
    tower = {"shared_size": size, "post_proj_dim": keys.shape(base + "post_proj/kernel")[1]} if projected else \
        {f"{modality}_size": size}
    cfg = VATTConfig(**tower, **geometry)
    sources = [*_tower(modality, "tower", base, size_spec(size)["depth"], projected), *_dense("head.linear", c + "_ops/cls/")]
    return cfg, sources, modality, keys.shape(c + "_ops/cls/kernel")[1]


def plan_conversion(bundle: TensorBundle) -> Plan:
    """Read a checkpoint's layout: which model it holds, its config, and the source of every model tensor."""
    keys = _Keys(bundle)
    roots = {part: r for part in MARKERS if (r := _only(keys, part)) is not None}
    if "classifier" in roots and ("video" in roots or "audio" in roots):
        cfg, sources, modality, classes = _classifier(keys, roots)
        plan = Plan("classifier", cfg, modality, classes)
    elif "unified" in roots and "heads" in roots:
        cfg = _agnostic(keys, roots)
        sources = _agnostic_sources(cfg, roots)
        plan = Plan("pretrained", cfg)
    elif {"video", "audio", "text", "heads"} <= set(roots):
        cfg = _specific(keys, roots)
        sources = _specific_sources(cfg, roots)
        plan = Plan("pretrained", cfg)
    else:
        found = ", ".join(f"{p} at {r or '(top)'}" for p, r in roots.items()) or "none"
        raise ConversionError(
            f"{bundle.prefix}: not a VATT checkpoint this converter knows. It looks for a video, audio and text tower "
            f"with FAC heads, the modality-agnostic model with heads, or a video/audio tower with a classifier "
            f"(by the tensors {', '.join(MARKERS.values())}); found: {found}. `make convert ... list=1` lists its tensors")
    plan.sources = sources
    plan.roots = roots
    used = {k for s in plan.sources for k in s.keys}
    plan.unused = sorted(set(keys.shapes) - used)
    plan.ignored = sorted(k for k in bundle.keys() if not _is_weight(k))
    return plan


# --------------------------------------------------------------------------- filling a model


def fill(model: torch.nn.Module, plan: Plan, bundle: TensorBundle) -> dict[str, torch.Tensor]:
    """The state dict of ``model`` from the checkpoint; raises ``ConversionError`` naming every gap and leftover."""
    target = model.state_dict()
    aliases = _aliases(model)
    state: dict[str, torch.Tensor] = {}
    missing_sources = []
    for s in plan.sources:
        if s.target not in target:
            raise ConversionError(f"internal: the model has no tensor {s.target}")
        try:
            arrays = [bundle.read(k + SUFFIX) for k in s.keys]
        except KeyError:
            missing_sources.append((s.target, [k for k in s.keys if k + SUFFIX not in bundle]))
            continue
        value = torch.from_numpy(np.ascontiguousarray(s.make(*arrays))).to(target[s.target].dtype)
        if tuple(value.shape) != tuple(target[s.target].shape):
            raise ConversionError(f"{', '.join(s.keys)} -> {s.target}: shape {list(value.shape)}, the model's is "
                                  f"{list(target[s.target].shape)}")
        state[s.target] = value
    for key in target:  # tensors shared with another module (the MA model's Transformer) and BN's counters
        if key not in state and aliases.get(key, key) in state:
            state[key] = state[aliases[key]]
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=torch.long)
    unfilled = sorted(set(target) - set(state))
    if plan.unused or unfilled or missing_sources:
        lines = []
        if missing_sources:
            lines.append(f"{len(missing_sources)} model tensor(s) whose checkpoint tensors are missing: "
                         + "; ".join(f"{t} needs {ks}" for t, ks in missing_sources[:10]))
        if unfilled:
            lines.append(f"{len(unfilled)} model tensor(s) not filled: {unfilled[:10]}")
        if plan.unused:
            lines.append(f"{len(plan.unused)} checkpoint tensor(s) with no place in the model: {plan.unused[:10]}")
        raise ConversionError(f"{bundle.prefix}: the checkpoint does not match the model read off its shapes.\n  "
                              + "\n  ".join(lines) + "\n(`make convert ... list=1` shows where every tensor goes)")
    return state


def _aliases(model: torch.nn.Module) -> dict[str, str]:
    first: dict[int, str] = {}
    out = {}
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        out[name] = first.setdefault(id(t), name)
    return out


def listing(plan: Plan, bundle: TensorBundle) -> str:
    """Every checkpoint tensor and where it goes (or why it does not), then the model tensors it fills."""
    goes = {k: s.target for s in plan.sources for k in s.keys}
    lines = [f"{bundle.prefix}: {plan.kind}" + (f" {plan.modality} classifier, {plan.num_classes} classes"
                                               if plan.kind == "classifier" else ""),
             f"config: {dataclasses.asdict(plan.config)}", ""]
    for key in bundle.keys():
        short = key[: -len(SUFFIX)] if key.endswith(SUFFIX) else key
        where = goes.get(short) or ("(ignored: not a weight)" if not _is_weight(key) else "(UNUSED: no place in the model)")
        lines.append(f"{short}  {list(bundle.shape(key))}  ->  {where}")
    return "\n".join(lines)


def read_classes(path: str | Path | None) -> list[str] | None:
    """Class names, one per line (line order = class index), when a file is given."""
    if path is None:
        return None
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------------- the release's layout for a config

# where the authors' pretraining model keeps each part (the release README; outer prefix included)
RELEASE_ROOTS = {
    "video": "model/layer_with_weights-0/_base_layer/vid_backbone/_base/",
    "audio": "model/layer_with_weights-0/_base_layer/aud_backbone/_base/",
    "text": "model/layer_with_weights-0/_base_layer/txt_backbone/",
    "unified": "model/layer_with_weights-0/_base_layer/unified_backbone/unified_transformer/",
    "heads": "model/layer_with_weights-0/_head_layer/_bridge_heads/0/",
}
_BACK: dict[Callable[..., np.ndarray], Callable[[tuple[int, ...]], tuple[int, ...]]] = {
    same: lambda s: s,
    linear: lambda s: s[::-1],
    token: lambda s: s[-1:],
    conv3d: lambda s: (s[2], s[3], s[4], s[1], s[0]),
    conv1d_as_linear: lambda s: (s[1], 1, s[0]),
}


def release_layout(model: torch.nn.Module, cfg: VATTConfig) -> dict[str, tuple[int, ...]]:
    """The keys (with their suffix) and shapes of the authors' checkpoint of a pretrained model like ``model``.

    The inverse of the conversion: used to write full-size checkpoints in the release's
    layout (with random values) for the conversion benchmark and tests.
    """
    sources = _agnostic_sources(cfg, RELEASE_ROOTS) if cfg.shared_size is not None else \
        _specific_sources(cfg, RELEASE_ROOTS)
    target = model.state_dict()
    shapes: dict[str, tuple[int, ...]] = {}
    for s in sources:
        out = tuple(target[s.target].shape)
        if s.make is stacked:  # q, k, v: a third of the rows each
            each = (out[1], out[0] // 3) if len(out) == 2 else (out[0] // 3,)
            shapes.update({k + SUFFIX: each for k in s.keys})
        else:
            shapes[s.keys[0] + SUFFIX] = _BACK[s.make](out)
    return shapes


"""Pretrained weights in and out: ``load_pretrained`` and ``save_pretrained`` (plain PyTorch, no Lightning).

- ``load_pretrained(path)`` reads a pretraining Lightning checkpoint (``.ckpt``,
  loaded with ``weights_only=True``) or an exported ``.safetensors`` file and
  returns the VATT model it holds, built from the arguments stored with the
  weights: no model name has to be repeated. Overrides change the geometry
  (``num_frames=64, image_size=320``): position tables are resized to it, as for
  fine-tuning at higher resolution (paper §3.1, §4; docs/vatt.md §2).
- ``save_pretrained(model, path, vocab)`` writes backbone + FAC heads, the model's
  build arguments and the caption vocabulary into one ``.safetensors`` file
  (``python -m vatt.export`` / ``make export`` do it from a checkpoint).

Every mismatch is an error that names what is wrong: missing and unexpected
tensors are listed, a shape mismatch names the tensor and both shapes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vatt.checkpoint import CheckpointError, read_checkpoint
from vatt.models.layers import resize_table
from vatt.models.vatt import PRESETS, VATT, VATTConfig, build_vatt

FORMAT = "vatt-safetensors-1"
# create_model keys that load files: the weights already hold what they produced
_FILE_KEYS = ("word_vectors", "vocab", "freeze_word_embeddings")
# position tables that follow the input geometry (resized when it changes)
_POSITION_TABLES = (".pos_embed.temporal", ".pos_embed.vertical", ".pos_embed.horizontal", ".pos_embed.table")


def model_kwargs(
    name: str,
    droptoken: float = 0.5,
    droptoken_per_sample: bool = True,
    vocab_size: int = 2**16,
    input: dict | None = None,
    backbone: dict | None = None,
    **_: Any,
) -> dict[str, Any]:
    """``create_model`` arguments from a training config's model settings (the pretraining module's hyper-parameters).

    ``input`` is the clip geometry (frames, fps, image size, sample rate, words);
    ``backbone`` further ``create_model`` overrides.
    """
    kwargs: dict[str, Any] = {"droptoken": droptoken, "droptoken_per_sample": droptoken_per_sample, "vocab_size": vocab_size}
    if input:
        kwargs.update(
            num_frames=input["num_frames"],
            image_size=input["image_size"],
            audio_samples=int(round(input["num_frames"] / input["fps"] * input["sample_rate"])),
            max_words=input.get("max_words", 16),
        )
    kwargs.update(backbone or {})
    return {"name": name, **kwargs}


def config_of(name: str, **overrides: Any) -> VATTConfig:
    """The full ``VATTConfig`` of preset ``name`` with ``overrides`` (file-loading keys dropped)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(VATTConfig)}
    given = {k: v for k, v in overrides.items() if k not in _FILE_KEYS}
    unknown = sorted(set(given) - fields)
    if unknown:
        raise TypeError(f"unknown model argument(s) {unknown}; valid: {sorted(fields)}")
    if "video_patch_size" in given:
        given["video_patch_size"] = tuple(given["video_patch_size"])
    return VATTConfig(**{**PRESETS[name], **given})


# --------------------------------------------------------------------------- reading


def _read_ckpt(path: Path) -> tuple[VATTConfig, dict[str, torch.Tensor], list[str] | None]:
    ckpt = read_checkpoint(path)
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict) or "name" not in hp or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a VATT pretraining checkpoint (no model hyper-parameters or state_dict)")
    kwargs = model_kwargs(**hp)
    cfg = config_of(kwargs.pop("name"), **kwargs)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    cfg.input = dict(hp.get("input") or {})  # frames, fps, image size, sample rate, words of the training clips
    vocab = None
    record = ckpt.get("vatt_vocab")
    if isinstance(record, dict) and Path(record.get("path", "")).is_file():
        from vatt.data.tokenizer import WordTokenizer

        vocab = WordTokenizer.from_file(record["path"]).words
    return cfg, state, vocab


def _read_safetensors(path: Path) -> tuple[VATTConfig, dict[str, torch.Tensor], list[str] | None]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from e
    if meta.get("format") != FORMAT or "vatt_config" not in meta:
        raise CheckpointError(f"{path} has no VATT build arguments in its metadata; export it with `make export`")
    stored = json.loads(meta["vatt_config"])
    stored["video_patch_size"] = tuple(stored["video_patch_size"])
    cfg = VATTConfig(**stored)
    cfg.input = json.loads(meta.get("input", "{}"))
    vocab = json.loads(meta["vocab"]) if meta.get("vocab") else None
    return cfg, state, vocab


def _aliases(model: nn.Module) -> dict[str, str]:
    """state_dict key -> the first key holding the same tensor (the MA model shares one Transformer)."""
    first: dict[int, str] = {}
    out = {}
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        out[name] = first.setdefault(id(t), name)
    return out


def _fit_state(model: VATT, state: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """Match ``state`` to ``model``: fill shared-tensor aliases, resize position tables, report every mismatch."""
    aliases = _aliases(model)
    target = model.state_dict()
    full = {}
    for key in target:
        if key in state:
            full[key] = state[key]
        elif aliases.get(key, key) in state:
            full[key] = state[aliases[key]]
    missing = sorted(set(target) - set(full))
    unexpected = sorted(set(state) - set(target))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit the model it describes: {len(missing)} missing tensor(s) {missing[:10]}, "
            f"{len(unexpected)} unexpected tensor(s) {unexpected[:10]}"
        )
    for key, value in full.items():
        want = target[key].shape
        if value.shape == want:
            continue
        if key.endswith(_POSITION_TABLES) and value.ndim == 2 and value.shape[1] == want[1]:
            full[key] = resize_table(value, want[0])  # another clip length / resolution: interpolate
            continue
        raise CheckpointError(f"{source}: tensor {key} has shape {list(value.shape)}, the model needs {list(want)}")
    return full


def load_pretrained(path: str | Path, **overrides: Any) -> VATT:
    """The VATT model in ``path`` (a pretraining ``.ckpt`` or an exported ``.safetensors``), in eval mode.

    ``overrides`` are ``VATTConfig`` fields that may differ from the stored ones:
    geometry (``num_frames``, ``image_size``, ``audio_samples``; position tables are
    resized), ``droptoken``, ``dropout``, ``attn_dropout``. The returned model has
    ``model.config`` and ``model.vocab`` (the caption words, index = word id, or
    None when the weights came without them).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        cfg, state, vocab = _read_safetensors(path)
    elif path.suffix == ".ckpt":
        cfg, state, vocab = _read_ckpt(path)
    else:
        raise ValueError(f"{path}: give a pretraining checkpoint (.ckpt) or an exported file (.safetensors)")
    fields = {f.name for f in dataclasses.fields(VATTConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"load_pretrained: unknown override(s) {unknown}; valid: {sorted(fields)}")
    if "video_patch_size" in overrides:
        overrides["video_patch_size"] = tuple(overrides["video_patch_size"])
    trained_input = cfg.input
    cfg = dataclasses.replace(cfg, **overrides)
    model = build_vatt(cfg)
    model.load_state_dict(_fit_state(model, state, path))
    model.config = cfg
    model.vocab = vocab
    model.input = clip_geometry(model, trained_input)
    return model.eval()


def clip_geometry(model: VATT, trained: dict | None = None) -> dict[str, Any]:
    """The clip settings a model reads: ``num_frames``, ``fps``, ``image_size``, ``sample_rate``, ``max_words``.

    Frames, size and words come from the model; fps and sample rate from the clips it
    was trained on (``trained``), else the paper's 10 fps with the sample rate that
    fills the model's audio window over the same seconds.
    """
    cfg = model.config
    fps = float((trained or {}).get("fps") or 10.0)
    seconds = cfg.num_frames / fps
    rate = (trained or {}).get("sample_rate") or round(cfg.audio_samples / seconds)
    if round(seconds * rate) != cfg.audio_samples:
        # a changed clip length keeps the sample rate: the audio window follows the frames
        rate = (trained or {}).get("sample_rate") or rate
    return {"num_frames": cfg.num_frames, "fps": fps, "image_size": cfg.image_size, "sample_rate": int(rate),
            "max_words": cfg.max_words}


# --------------------------------------------------------------------------- writing


def save_pretrained(model: VATT, path: str | Path, vocab: list[str] | None = None, **info: str) -> Path:
    """Write ``model``'s weights (backbone + FAC heads), build arguments and ``vocab`` to ``path`` (.safetensors).

    Tensors shared by several modules (the MA model's Transformer) are stored once.
    ``info`` adds string metadata (e.g. the source checkpoint).
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: the export file name must end in .safetensors")
    aliases = _aliases(model)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if aliases.get(k, k) == k}
    meta = {"format": FORMAT, "vatt_config": json.dumps(dataclasses.asdict(model.config)),
            "input": json.dumps(getattr(model, "input", None) or clip_geometry(model))}
    if vocab is not None:
        if len(vocab) != model.config.vocab_size:
            raise ValueError(f"vocab has {len(vocab)} words but the model's word table has {model.config.vocab_size}")
        meta["vocab"] = json.dumps(list(vocab))
    meta.update({k: str(v) for k, v in info.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)
    _readable_as_other_files(path)
    return path


def _readable_as_other_files(path: Path) -> None:
    """safetensors writes its files private (0600); give them the mode any new file gets here (the umask's)."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)

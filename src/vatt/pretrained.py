"""Pretrained weights in and out: ``load_pretrained`` / ``save_pretrained``, ``load_classifier`` / ``save_classifier``.

Plain PyTorch, no Lightning. What ``load_pretrained(path)`` reads:

- a pretraining Lightning checkpoint (``.ckpt``, loaded with ``weights_only=True``);
- an exported or converted ``.safetensors`` file (weights, the model's config and its
  caption words in the file's metadata);
- a folder as ``save_pretrained(model, folder)`` writes it, laid out as models on the
  Hugging Face hub are: ``config.json`` (the model's own config, what its clips look
  like, how its captions are tokenized, where the weights came from),
  ``model.safetensors``, ``vocab.txt`` (one word per line, line = word id) and a model
  card ``README.md``;
- ``hf://<org>/<name>[@<revision>]``: such a folder on the hub, fetched through
  ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE=1`` and ``HF_ENDPOINT`` apply).

The model is rebuilt from the config stored with the weights: no model name has to be
repeated. Overrides change the geometry (``num_frames=64, image_size=320``): position
tables are resampled to it with the model's ``position_resize`` (the authors' cubic
spline by default), as for fine-tuning at higher resolution (paper §3.1, §4;
docs/vatt.md §2). ``load_classifier`` / ``save_classifier`` do the same for a tower with
a classification head (the authors' fine-tuned Kinetics, Moments-in-Time and AudioSet
models, converted with ``make convert``).

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

from vatt.checkpoint import CheckpointError, file_sha256, read_checkpoint
from vatt.models.layers import resize_table
from vatt.models.vatt import VATT, TowerClassifier, VATTConfig, build_tower_classifier, build_vatt

FORMAT = "vatt-safetensors-1"
CLASSIFIER_FORMAT = "vatt-classifier-1"
# how captions are split into words (vatt.data.tokenizer); files written before the rule was stored used "split"
DEFAULT_PUNCTUATION = "remove"
# the checkpoint entry where the pretraining module stores its model's config and caption words
MODEL_KEY = "vatt_model"
# position tables that follow the input geometry (resized when it changes)
_POSITION_TABLES = (".pos_embed.temporal", ".pos_embed.vertical", ".pos_embed.horizontal", ".pos_embed.table")


# --------------------------------------------------------------------------- reading


@dataclasses.dataclass
class Stored:
    """What a weights file holds: the model's config, its tensors, its caption words and the rest of its record."""

    config: VATTConfig
    state: dict[str, torch.Tensor]
    vocab: list[str] | None
    meta: dict[str, Any]  # kind, punctuation, input, and for classifiers modality, num_classes, multilabel, classes


def _read_ckpt(path: Path) -> Stored:
    ckpt = read_checkpoint(path)
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict) or "name" not in hp or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a VATT pretraining checkpoint (no model hyper-parameters or state_dict)")
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    # frames, fps, image size, sample rate, words of the training clips
    meta = {"kind": "pretrained", "input": dict(hp.get("input") or {})}
    stored = ckpt.get(MODEL_KEY)
    if isinstance(stored, dict) and "config" in stored:
        meta["punctuation"] = stored.get("punctuation", DEFAULT_PUNCTUATION)
        return Stored(VATTConfig.from_dict(stored["config"]), state, stored.get("vocab"), meta)
    return _read_older_ckpt(ckpt, hp, state, meta)


def _read_older_ckpt(ckpt: dict[str, Any], hp: dict[str, Any], state: dict[str, Any], meta: dict[str, Any]) -> Stored:
    """A checkpoint without its model's config: rebuilt from the training module's hyper-parameters.

    Such a checkpoint names its vocabulary file (``vatt_vocab``) instead of holding the
    words. The translation of hyper-parameters lives with the Lightning modules, so
    only these files import it (and Lightning).
    """
    from vatt.lightning.hparams import backbone_config

    cfg = backbone_config(hp)
    cfg = cfg.with_overrides(legacy_settings(state, hp.get("backbone") or {}))
    vocab, meta["punctuation"] = None, "split"
    record = ckpt.get("vatt_vocab")
    if isinstance(record, dict) and Path(record.get("path", "")).is_file():
        from vatt.data.tokenizer import WordTokenizer

        tokenizer = WordTokenizer.from_file(record["path"])
        vocab, meta["punctuation"] = tokenizer.words, tokenizer.punctuation
    return Stored(cfg, state, vocab, meta)


def legacy_settings(state: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Settings of weights written before a default changed, read off their tensors (None: no change).

    Until the text feed-forward norm became the authors' LayerNorm with an offset, it
    had none: weights without ``norm2.bias`` in the text tower (and no setting of their
    own) were trained with ``t5_mlp_norm="layer_nobias"``.
    """
    out: dict[str, Any] = {}
    norm = "text.transformer.blocks.0.norm2"
    if "t5_mlp_norm" not in settings and f"{norm}.weight" in state and f"{norm}.bias" not in state:
        out["t5_mlp_norm"] = "layer_nobias"
    return out


def _read_safetensors(path: Path) -> Stored:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from e
    if meta.get("format") not in (FORMAT, CLASSIFIER_FORMAT) or "vatt_config" not in meta:
        raise CheckpointError(f"{path} has no VATT build arguments in its metadata; export it with `make export`")
    record = {"kind": "classifier" if meta["format"] == CLASSIFIER_FORMAT else "pretrained",
              "input": json.loads(meta.get("input", "{}")), "punctuation": meta.get("punctuation", "split")}
    record.update(json.loads(meta.get("classifier", "{}")))
    vocab = json.loads(meta["vocab"]) if meta.get("vocab") else None
    return Stored(VATTConfig.from_dict(json.loads(meta["vatt_config"])), state, vocab, record)


def _read_folder(path: Path) -> Stored:
    """A folder as ``save_pretrained`` writes it: ``config.json``, ``model.safetensors``, ``vocab.txt``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_file, weights = path / "config.json", path / "model.safetensors"
    if not config_file.is_file() or not weights.is_file():
        raise CheckpointError(f"{path} is not a VATT model folder: it needs config.json and model.safetensors "
                              "(vatt.save_pretrained writes them)")
    record = json.loads(config_file.read_text(encoding="utf-8"))
    if record.get("format") not in (FORMAT, CLASSIFIER_FORMAT):
        raise CheckpointError(f"{config_file}: format {record.get('format')!r} is not a VATT model's")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({e})") from e
    vocab_file = path / "vocab.txt"
    vocab = vocab_file.read_text(encoding="utf-8").split("\n")[:-1] if vocab_file.is_file() else None
    meta = {k: v for k, v in record.items() if k not in ("format", "config")}
    meta["kind"] = "classifier" if record["format"] == CLASSIFIER_FORMAT else "pretrained"
    return Stored(VATTConfig.from_dict(record["config"]), state, vocab, meta)


def resolve(path: str | Path) -> Path:
    """A local path, or a hub address ``hf://<org>/<name>[@<revision>]`` fetched (or found in the cache) as a folder."""
    text = str(path)
    if not text.startswith("hf://"):
        return Path(path)
    repo, _, revision = text.removeprefix("hf://").partition("@")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as e:  # pragma: no cover - a dependency of the project
        raise CheckpointError(f"{text}: reading from the hub needs huggingface_hub (pip install huggingface_hub)") from e
    try:
        return Path(snapshot_download(repo_id=repo, revision=revision or None))
    except LocalEntryNotFoundError as e:
        raise CheckpointError(f"{text}: not in the local cache and the hub cannot be reached (HF_HUB_OFFLINE is set, or "
                              f"no network): {e}") from e
    except HfHubHTTPError as e:
        raise CheckpointError(f"{text}: the hub refused it ({e})") from e


def read_weights(path: str | Path) -> Stored:
    """Read any weights file or folder this project writes (or a Lightning checkpoint); see the module docstring."""
    path = resolve(path)
    if path.is_dir():
        return _read_folder(path)
    if path.suffix == ".ckpt":
        return _read_ckpt(path)  # a missing one is reported with the run's other checkpoints
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    raise ValueError(f"{path}: give a pretraining checkpoint (.ckpt), an exported file (.safetensors), a model folder "
                     "or hf://<org>/<name>")


def weights_kind(path: str | Path) -> str:
    """``"pretrained"`` or ``"classifier"``, from a weights file's metadata alone (a ``.ckpt`` is pretraining)."""
    path = resolve(path)
    if path.is_dir() and (path / "config.json").is_file():
        fmt = json.loads((path / "config.json").read_text(encoding="utf-8")).get("format")
    elif path.suffix == ".safetensors" and path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            fmt = (f.metadata() or {}).get("format")
    else:
        return "pretrained"
    return "classifier" if fmt == CLASSIFIER_FORMAT else "pretrained"


def weights_sha256(path: str | Path) -> str:
    """The SHA-256 of the file holding a model's tensors (a folder's ``model.safetensors``)."""
    path = resolve(path)
    return file_sha256(path / "model.safetensors" if path.is_dir() else path)


def _aliases(model: nn.Module) -> dict[str, str]:
    """state_dict key -> the first key holding the same tensor (the MA model shares one Transformer)."""
    first: dict[int, str] = {}
    out = {}
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        out[name] = first.setdefault(id(t), name)
    return out


def _fit_state(model: nn.Module, state: dict[str, torch.Tensor], source: Path, resize: str) -> dict[str, torch.Tensor]:
    """Match ``state`` to ``model``: fill shared-tensor aliases, resample position tables, report every mismatch."""
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
            full[key] = resize_table(value, want[0], resize)  # another clip length / resolution
            continue
        raise CheckpointError(f"{source}: tensor {key} has shape {list(value.shape)}, the model needs {list(want)}")
    return full


def load_pretrained(path: str | Path, **overrides: Any) -> VATT:
    """The VATT model in ``path`` (``.ckpt``, ``.safetensors``, a model folder or ``hf://...``), in eval mode.

    ``overrides`` are ``VATTConfig`` fields that may differ from the stored ones:
    geometry (``num_frames``, ``image_size``, ``audio_samples``; position tables are
    resampled), ``droptoken``, ``dropout``, ``attn_dropout``, ``position_resize``. The
    returned model has ``model.config``, ``model.vocab`` (the caption words, index =
    word id, or None when the weights came without them), ``model.punctuation`` (how its
    captions are split into words) and ``model.input`` (the clips it reads).
    """
    stored = read_weights(path)
    if stored.meta["kind"] == "classifier":
        raise CheckpointError(f"{path} is a fine-tuned {stored.meta.get('modality')} classifier, not a pretrained "
                              "VATT: load it with vatt.load_classifier (make eval task=classifier)")
    cfg = stored.config.with_overrides(overrides, "load_pretrained")
    model = build_vatt(cfg)
    model.load_state_dict(_fit_state(model, stored.state, Path(str(path)), cfg.position_resize))
    model.config = cfg
    model.vocab = stored.vocab
    model.punctuation = stored.meta.get("punctuation", DEFAULT_PUNCTUATION)
    model.input = clip_geometry(model, stored.meta.get("input"))
    return model.eval()


def load_classifier(path: str | Path, **overrides: Any) -> TowerClassifier:
    """The fine-tuned classifier in ``path`` (``save_classifier``'s file or folder, or ``hf://...``), in eval mode.

    Has ``config``, ``modality``, ``num_classes``, ``multilabel``, ``classes`` (names, or
    None) and ``input``; overrides as for ``load_pretrained``.
    """
    stored = read_weights(path)
    if stored.meta["kind"] != "classifier":
        raise CheckpointError(f"{path} is a pretrained VATT, not a classifier: load it with vatt.load_pretrained "
                              "(fine-tune it with make train experiment=finetune_<dataset> pretrained=...)")
    m = stored.meta
    cfg = stored.config.with_overrides(overrides, "load_classifier")
    model = build_tower_classifier(cfg, m["modality"], int(m["num_classes"]), float(m.get("dropout", 0.0)),
                                   bool(m.get("multilabel")))
    model.load_state_dict(_fit_state(model, stored.state, Path(str(path)), cfg.position_resize))
    model.config, model.num_classes = cfg, int(m["num_classes"])
    model.multilabel, model.classes = bool(m.get("multilabel")), m.get("classes")
    model.input = clip_geometry(model, m.get("input"))
    return model.eval()


def clip_geometry(model: nn.Module, trained: dict | None = None) -> dict[str, Any]:
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


def _unique_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with tensors shared by several modules (the MA model's Transformer) stored once."""
    aliases = _aliases(model)
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if aliases.get(k, k) == k}


def _write(path: Path, fmt: str, model: nn.Module, record: dict[str, Any], vocab: list[str] | None,
           info: dict[str, str]) -> Path:
    """One ``.safetensors`` file (everything in its metadata) or a model folder with its card."""
    from safetensors.torch import save_file

    state = _unique_state(model)
    if path.suffix == ".safetensors":
        meta = {"format": fmt, "vatt_config": json.dumps(record["config"]), "input": json.dumps(record["input"]),
                "punctuation": record["punctuation"]}
        if fmt == CLASSIFIER_FORMAT:
            meta["classifier"] = json.dumps({k: record[k] for k in ("modality", "num_classes", "multilabel", "dropout",
                                                                     "classes")})
        if vocab is not None:
            meta["vocab"] = json.dumps(list(vocab))
        meta.update({k: str(v) for k, v in info.items()})
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path), metadata=meta)
        _readable_as_other_files(path)
        return path
    if path.suffix:
        raise ValueError(f"{path}: write a .safetensors file or a folder (a path without a suffix)")
    path.mkdir(parents=True, exist_ok=True)
    weights = path / "model.safetensors"
    save_file(state, str(weights), metadata={"format": fmt})
    _readable_as_other_files(weights)
    if vocab is not None:
        (path / "vocab.txt").write_text("".join(f"{w}\n" for w in vocab), encoding="utf-8")
    sha = file_sha256(weights)
    (path / "config.json").write_text(json.dumps({"format": fmt, **record, **info, "weights_sha256": sha},
                                                 indent=1) + "\n", encoding="utf-8")
    (path / "README.md").write_text(model_card(fmt, record, info, sha, vocab is not None), encoding="utf-8")
    return path


def save_pretrained(model: VATT, path: str | Path, vocab: list[str] | None = None, **info: str) -> Path:
    """Write ``model``'s weights (backbone + FAC heads), its config and ``vocab``: a ``.safetensors`` file or a folder.

    A folder gets ``config.json``, ``model.safetensors``, ``vocab.txt`` and a model card
    ``README.md``: the layout of a model on the Hugging Face hub (upload the folder, then
    ``load_pretrained("hf://<org>/<name>")``). ``info`` adds string records (the source
    checkpoint and its checksum, ...).
    """
    vocab = getattr(model, "vocab", None) if vocab is None else vocab
    if vocab is not None and len(vocab) != model.config.vocab_size:
        raise ValueError(f"vocab has {len(vocab)} words but the model's word table has {model.config.vocab_size}")
    record = {"config": dataclasses.asdict(model.config), "input": getattr(model, "input", None) or clip_geometry(model),
              "punctuation": getattr(model, "punctuation", DEFAULT_PUNCTUATION)}
    return _write(Path(path), FORMAT, model, record, vocab, info)


def save_classifier(model: TowerClassifier, path: str | Path, classes: list[str] | None = None, **info: str) -> Path:
    """Write a ``TowerClassifier`` (tower + head, its config, modality, classes) as a file or a folder."""
    classes = getattr(model, "classes", None) if classes is None else classes
    num_classes = model.head.linear.out_features
    if classes is not None and len(classes) != num_classes:
        raise ValueError(f"{len(classes)} class names for a head with {num_classes} classes")
    record = {"config": dataclasses.asdict(model.config), "input": getattr(model, "input", None) or clip_geometry(model),
              "punctuation": DEFAULT_PUNCTUATION, "modality": model.modality, "num_classes": num_classes,
              "multilabel": bool(getattr(model, "multilabel", False)), "dropout": float(model.head.dropout.p),
              "classes": classes}
    return _write(Path(path), CLASSIFIER_FORMAT, model, record, None, info)


def model_card(fmt: str, record: dict[str, Any], info: dict[str, str], sha: str, has_vocab: bool) -> str:
    """The ``README.md`` of a model folder: what it is, where it came from, how to use it, what it scored."""
    from vatt.zoo import list_pretrained

    source = info.get("source", "")
    official = next((e for e in list_pretrained() if e["files"]["index"].rsplit("/", 2)[-2] in source
                     and e["kind"] == ("classifier" if fmt == CLASSIFIER_FORMAT else "pretrained")), None)
    cfg = record["config"]
    if fmt == CLASSIFIER_FORMAT:
        what = f"a {record['modality']} classifier ({record['num_classes']} classes)"
        use = ("```python\nimport vatt\nmodel = vatt.load_classifier(\"<this folder>\")  # "
               f"{record['modality']} clips -> logits\n```\n\n`make eval task=classifier data=<dataset> "
               "data.root=DIR pretrained=<this folder>` tests it on every view of the test videos.")
    else:
        what = "a pretrained VATT (video, audio and text towers with the FAC common-space heads)"
        use = ("```python\nimport vatt\nmodel = vatt.load_pretrained(\"<this folder>\")\n"
               "video = model.encode_video(clips, space=\"vt\", normalize=True)\n```\n\n"
               "`make eval task=linear_probe|retrieval|zero_shot ... pretrained=<this folder>` evaluates it; "
               "`make train experiment=finetune_<dataset> pretrained=<this folder>` fine-tunes it.")
    lines = [
        "---", "license: apache-2.0", "library_name: vatt", "tags: [video, audio, text, self-supervised]", "---", "",
        f"# {official['name'] if official else 'VATT'}", "",
        f"{what}: VATT (Akbari et al., *VATT: Transformers for Multimodal Self-Supervised Learning from Raw "
        "Video, Audio and Text*, NeurIPS 2021), in this project's PyTorch layout.", "",
        "## Source", "",
        f"- converted from: `{source or 'a model trained with this project'}`",
        *([f"- source SHA-256: `{info['source_sha256']}`"] if info.get("source_sha256") else []),
        *([f"- conversion: `{official['convert']}`"] if official else []),
        f"- weights (`model.safetensors`) SHA-256: `{sha}`",
        "- licence of the source: the authors' release (google-research `vatt/`) is Apache-2.0; check the terms of "
        "the checkpoint you converted before redistributing it" if official else "- licence: Apache-2.0",
        "", "## Model", "",
        f"- towers: video `{cfg.get('shared_size') or cfg['video_size']}`, audio "
        f"`{cfg.get('shared_size') or cfg['audio_size']}`, text `{cfg.get('shared_size') or cfg['text_size']}`",
        f"- clips: {record['input']}",
        f"- caption words: {'vocab.txt (line = word id)' if has_vocab else 'not included'}; punctuation rule "
        f"`{record['punctuation']}`", "",
        "## Intended use", "",
        "Research on video, audio and text representations: linear probes, fine-tuning, zero-shot retrieval and "
        "classification, as in the paper. Not evaluated for decisions about people.", "",
        "## Use", "", use, "",
    ]
    if official and official["reported"]:
        lines += ["## Reported by the authors", "", "| measure | value |", "|---|---|",
                  *(f"| {k} | {v} |" for k, v in official["reported"].items()), ""]
    return "\n".join(lines)


def _readable_as_other_files(path: Path) -> None:
    """safetensors writes its files private (0600); give them the mode any new file gets here (the umask's)."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)

"""Downstream evaluation: ``python -m vatt.eval task=NAME data=NAME data.root=DIR pretrained=PATH`` (``make eval``).

Tasks (``configs/eval/task``):
- ``linear_probe``: frozen features, a logistic-regression classifier per official
  split/fold, video-level top-1/top-5, and their mean (``vatt.tasks.linear_probe``);
- ``retrieval``: zero-shot text <-> video retrieval in the video-text space
  (``vatt.tasks.retrieval``);
- ``classifier``: a fine-tuned classifier (``make convert`` writes the authors') on
  every view of the test videos, logits averaged per video.
``pretrained`` is a pretraining checkpoint (``.ckpt``) or an export
(``.safetensors``); ``pretrained=null`` builds the same model with random weights
(the baseline to beat). Each run writes its config, TensorBoard events and a flat
``metrics.json`` into ``logs/eval/runs/<timestamp>/``. Fine-tuning is a training run:
``make train experiment=finetune_<dataset>``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from vatt.config import check_eval_config
from vatt.data.clip import ClipConfig
from vatt.data.downstream import DownstreamData
from vatt.data.loading import DataLoader, default_num_workers, share_cores_with_workers
from vatt.data.tokenizer import WordTokenizer
from vatt.errors import UserError, reported
from vatt.interrupts import Stopped, raise_on_stop_signals
from vatt.metrics import average_views, classification_metrics, write_run_metrics
from vatt.models import VATT, create_model
from vatt.progress import track
from vatt.pretrained import clip_geometry, load_classifier, load_pretrained
from vatt.runs import register_resolvers
from vatt.tasks import features as feats
from vatt.tasks.linear_probe import chance_top1, linear_probe
from vatt.tasks.retrieval import retrieval_metrics_from_features

log = logging.getLogger("vatt.eval")

CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"
CONFIG_DIR = str(CONFIG_ROOT / "eval")
SEARCHPATH = f"hydra.searchpath=[file://{CONFIG_ROOT}]"  # the data, paths, hydra and logger groups

register_resolvers()


def build_model(cfg: DictConfig, vocab_size: int | None = None) -> VATT:
    """The model to evaluate: ``pretrained`` weights, or ``model_name`` with random weights (seeded)."""
    geometry = {k: v for k, v in (cfg.get("clip") or {}).items() if k in ("num_frames", "image_size")}
    if cfg.pretrained:
        model = load_pretrained(cfg.pretrained, droptoken=0.0, **geometry)
    else:
        torch.manual_seed(cfg.seed)
        extra = {"vocab_size": vocab_size} if vocab_size else {}
        model = create_model(cfg.model_name, droptoken=0.0, **geometry, **extra)
        model.vocab = None
        model.input = clip_geometry(model)
    return model.eval()


def clip_config(model: VATT, cfg: DictConfig) -> ClipConfig:
    geometry = {**model.input, **{k: v for k, v in (cfg.get("clip") or {}).items()}}
    return ClipConfig(num_frames=geometry["num_frames"], fps=geometry["fps"], image_size=geometry["image_size"],
                      sample_rate=geometry["sample_rate"], max_words=geometry.get("max_words", 16))


def downstream_data(cfg: DictConfig) -> DownstreamData:
    """The ``data`` section as a :class:`DownstreamData` (the demo generated when it asks for it)."""
    data = DownstreamData.from_settings(OmegaConf.to_container(cfg.data, resolve=True))
    data.prepare()
    return data


def _device(cfg: DictConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def run_linear_probe(cfg: DictConfig, model: VATT, data: DownstreamData) -> dict[str, float]:
    listing = data.listing()
    if listing.multilabel or not listing.classes:
        raise ValueError(f"task=linear_probe needs a single-label classification set; {listing.name} is not one "
                         "(fine-tune multi-label sets: make train experiment=finetune_audioset)")
    probe, clip = cfg.probe, clip_config(model, cfg)
    device, workers = _device(cfg), default_num_workers(cfg.num_workers)
    base_key = {"weights": feats.weights_id(cfg.pretrained, cfg.model_name, cfg.seed), "dataset": listing.name,
                "root": str(Path(data.root).resolve()), "options": {**data.options, **({"label": data.label}
                                                                                        if data.label else {})},
                "clip": vars(clip), "modality": data.modality, "features": probe.features}

    def features(items: list, mode: str, part: str, split: str) -> dict[str, torch.Tensor]:
        ds = data.dataset(items, mode, clip)
        key = {**base_key, "split": split, "part": part, "mode": mode, "views": [data.num_windows, data.num_crops],
               "items": len(items)}
        return feats.cached(probe.cache_dir, key, lambda: feats.extract(
            model, ds, probe.features, cfg.batch_size, workers, device))

    metrics: dict[str, float] = {}
    skipped = 0
    per_split = len(listing.splits) > 1  # split1/..., fold3/... entries beside the mean
    for split in listing.splits:
        train = features(split.train, "single", "train", split.name)
        test = features(split.test, "views", "test", split.name)
        skipped += int(train["skipped"].sum()) + int(test["skipped"].sum())
        tv, sv = train["valid"], test["valid"]
        result = linear_probe(train["features"][tv, 0], train["labels"][tv], test["features"][sv], test["labels"][sv],
                              len(listing.classes), grid=tuple(probe.l2_grid), seed=cfg.seed)
        result.update(chance_top1=chance_top1(test["labels"][sv]), num_train=int(tv.sum()), num_test=int(sv.sum()))
        for k, v in result.items():
            metrics[f"{split.name}/{k}"] = v
        log.info("%s: top-1 %.4f, top-5 %.4f (%d train / %d test videos)", split.name, result["top1"],
                 result["top5"], int(tv.sum()), int(sv.sum()))
    names = [s.name for s in listing.splits]
    mean = {k: sum(metrics[f"{n}/{k}"] for n in names) / len(names) for k in ("top1", "top5", "chance_top1")}
    out = {k: v for k, v in metrics.items() if per_split} | {f"test/{k}": v for k, v in mean.items()}
    out["num_train"], out["num_test"] = metrics[f"{names[0]}/num_train"], metrics[f"{names[0]}/num_test"]
    out["num_skipped"] = skipped
    if not per_split:
        out["test/l2"] = metrics[f"{names[0]}/l2"]
    return out


def run_retrieval(cfg: DictConfig, model: VATT, data: DownstreamData, tokenizer: WordTokenizer) -> dict[str, float]:
    listing = data.listing(retrieval=True)
    split = data.test_split(listing)
    items = [i for i in split.test if i.caption]
    if not items:
        raise ValueError(f"task=retrieval: {listing.name} has no captioned test clips")
    clip = clip_config(model, cfg)
    ds = data.dataset(items, "views", clip, modality="video", num_crops=1, tokenizer=tokenizer)
    out = feats.extract(model, ds, "vt", cfg.batch_size, default_num_workers(cfg.num_workers), _device(cfg), text=True)
    valid = out["valid"]
    metrics = {f"test/{k}": v for k, v in retrieval_metrics_from_features(out["text"][valid], out["features"][valid]).items()}
    n = int(valid.sum())
    metrics["test/chance_R@10"] = min(1.0, 10 / max(n, 1))
    metrics.update({"num_train": 0, "num_test": n, "num_skipped": int(out["skipped"].sum())})
    return metrics


def _name_key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def class_order(model_classes: list[str] | None, listing: Any) -> list[int] | None:
    """For each class of the dataset (its index order), the classifier's index of the same class; None: the same order.

    Names are compared without case, spaces, underscores or punctuation. Without names
    in the classifier its class *i* is taken as the dataset's class *i*.
    """
    if model_classes is None:
        log.warning("the classifier carries no class names: its class i is taken as %s's class i (%s, ...); convert "
                    "it with --classes <names file> when its order may differ", listing.name, listing.classes[:3])
        return None
    own = {_name_key(c): i for i, c in enumerate(model_classes)}
    missing = [c for c in listing.classes if _name_key(c) not in own]
    if missing:
        raise UserError(f"the classifier's classes do not include {len(missing)} of {listing.name}'s, e.g. {missing[:3]}")
    order = [own[_name_key(c)] for c in listing.classes]
    return None if order == list(range(len(order))) else order


def run_classifier(cfg: DictConfig, data: DownstreamData) -> dict[str, float]:
    """A fine-tuned classifier on every view of the test videos, logits averaged per video (the authors' protocol)."""
    if not cfg.pretrained:
        raise UserError("task=classifier tests a fine-tuned classifier: give pretrained=<file or folder> (make convert "
                        "writes the authors' Kinetics / Moments-in-Time / AudioSet classifiers)")
    geometry = {k: v for k, v in (cfg.get("clip") or {}).items() if k in ("num_frames", "image_size")}
    model = load_classifier(cfg.pretrained, droptoken=0.0, **geometry)
    listing = data.listing()
    if model.num_classes != len(listing.classes) or model.multilabel != listing.multilabel:
        raise UserError(f"pretrained={cfg.pretrained} has {model.num_classes} "
                        f"{'multi-label ' if model.multilabel else ''}classes; {listing.name} has {len(listing.classes)}")
    order = class_order(model.classes, listing)
    ds = data.dataset(data.test_split().test, "views", clip_config(model, cfg), modality=model.modality)
    device = _device(cfg)
    model = model.to(device)
    loader = DataLoader(ds, batch_size=max(1, cfg.batch_size // ds.num_views),
                        num_workers=default_num_workers(cfg.num_workers))
    logits, labels, valid, skipped = [], [], [], 0
    with torch.no_grad():
        for batch in track(loader, len(loader), f"{len(ds)} test videos x {ds.num_views} views", log):
            x = batch[model.modality].to(device)
            b, v = x.shape[:2]
            scores = average_views(model(x.reshape(b * v, *x.shape[2:])).float(), v).cpu()
            logits.append(scores[:, order] if order is not None else scores)
            labels.append(batch["label"])
            valid.append(batch["valid"])
            skipped += int(batch["skipped"].sum())
    metrics = classification_metrics(torch.cat(logits), torch.cat(labels), torch.cat(valid), listing.multilabel)
    out = {f"test/{k}": v for k, v in metrics.items() if k != "num_videos"}
    out.update({"num_train": 0, "num_test": int(metrics["num_videos"]), "num_skipped": skipped})
    return out


def model_tokenizer(model: VATT) -> WordTokenizer:
    """The words a pretrained model's word table was trained with (index = word id)."""
    if model.vocab is None:
        raise ValueError(f"{model.config} came without its caption vocabulary; export the checkpoint with "
                         "`make export` next to its tokenizer.json, or evaluate the .ckpt where it was trained")
    return WordTokenizer.from_vocab(model.vocab, getattr(model, "punctuation", "remove"))


def caption_tokenizer(listing: Any) -> WordTokenizer:
    """A vocabulary of the evaluation captions' own words (for a model with random weights)."""
    return WordTokenizer.build([i.caption for s in listing.splits for i in s.test if i.caption])


def evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    data = downstream_data(cfg)
    if _device(cfg).type == "cpu":  # feature passes on the CPU beside their loader workers
        share_cores_with_workers(default_num_workers(cfg.num_workers))
    if cfg.protocol == "linear_probe":
        metrics = run_linear_probe(cfg, build_model(cfg), data)
    elif cfg.protocol == "classifier":
        metrics = run_classifier(cfg, data)
    elif cfg.protocol == "retrieval":
        own_words = None if cfg.pretrained else caption_tokenizer(data.listing(retrieval=True))
        model = build_model(cfg, own_words.vocab_size if own_words else None)
        metrics = run_retrieval(cfg, model, data, own_words or model_tokenizer(model))
    else:
        raise UserError(f"protocol={cfg.protocol!r}: choose task=linear_probe, task=retrieval or task=classifier")
    listing = data.listing(retrieval=cfg.protocol == "retrieval")
    shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith("test/")}
    log.info("%s on %s (%s): %s", cfg.protocol, listing.name, cfg.pretrained or f"random {cfg.model_name}", shown)
    write_run_metrics(metrics, run_dir, tensorboard=bool(cfg.get("logger")))
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    try:
        with raise_on_stop_signals(), reported("vatt.eval", log):
            check_eval_config(cfg)
            evaluate(cfg, Path(HydraConfig.get().runtime.output_dir))
    except Stopped as e:
        # feature-cache files are written whole (temporary file + rename): what was cached stays valid
        log.warning("stopped by %s: no metrics.json was written; features cached so far are kept, so the same "
                    "command continues from them", e.signal.name)
        raise SystemExit(e.exit_code) from None


if __name__ == "__main__":
    sys.argv.append(SEARCHPATH)
    main()

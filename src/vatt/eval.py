"""Downstream evaluation: ``python -m vatt.eval task=NAME data=NAME data.root=DIR pretrained=PATH`` (``make eval``).

Tasks (``configs/eval/task``):
- ``linear_probe``: frozen features, a classifier per official split/fold
  (``probe.classifier=logistic``: L-BFGS logistic regression; ``authors``: the
  authors' Dense-128 network), video-level top-1/top-5, and their mean
  (``vatt.tasks.linear_probe``);
- ``zero_shot``: class names turned into prompts and compared with the clips in the
  video-text space, no training (``vatt.tasks.zero_shot``);
- ``retrieval``: zero-shot text <-> video retrieval in the video-text space
  (``vatt.tasks.retrieval``);
- ``classifier``: a fine-tuned classifier (``make convert`` writes the authors') on
  every view of the test videos, logits averaged per video.
``pretrained`` is a pretraining checkpoint (``.ckpt``) or an export
(``.safetensors``); ``pretrained=null`` builds the same model with random weights
(the baseline to beat). Each run writes its config, TensorBoard events and
``metrics.json`` into ``logs/eval/runs/<timestamp>/``: the metrics, flat, and a
``protocol`` object saying what was measured and whether it compares with the paper
(``vatt.protocol``). Fine-tuning is a training run: ``make train experiment=finetune_<dataset>``.
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
from vatt import protocol
from vatt.data.downstream import Item, Listing, Split
from vatt.metrics import average_views, classification_metrics, write_run_metrics
from vatt.models import VATT, create_model
from vatt.progress import track
from vatt.pretrained import clip_geometry, load_classifier, load_pretrained
from vatt.runs import register_resolvers
from vatt.tasks import features as feats
from vatt.tasks import zero_shot as zs
from vatt.tasks.linear_probe import authors_probe, chance_top1, linear_probe
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


def evaluated_splits(data: DownstreamData, listing: Listing) -> list[Split]:
    """``data.split`` when it is set, else every official split/fold (their mean is reported)."""
    return [data.split_of(data.split)] if data.split else list(listing.splits)


def _valid_ids(items: list[Item], valid: torch.Tensor) -> list[str]:
    return [items[i].id for i in torch.nonzero(valid, as_tuple=False).flatten().tolist()]


class Features:
    """Frozen features of a dataset's items for one model, cached by everything they depend on."""

    def __init__(self, cfg: DictConfig, model: VATT, data: DownstreamData, feature: str, modality: str,
                 cache_dir: str | None) -> None:
        self.cfg, self.model, self.data, self.feature, self.modality = cfg, model, data, feature, modality
        self.cache_dir = cache_dir
        self.clip = clip_config(model, cfg)
        self.device, self.workers = _device(cfg), default_num_workers(cfg.num_workers)
        listing = data.listing()
        weights = feats.weights_id(cfg.pretrained, cfg.model_name, cfg.seed)
        if not cfg.pretrained:  # random weights: the word table's size changes what the seed draws
            weights["vocab_size"] = getattr(getattr(model, "config", None), "vocab_size", None)
        self.base_key = {"weights": weights, "dataset": listing.name,
                         "root": str(Path(data.root).resolve()),
                         "options": {**data.options, **({"label": data.label} if data.label else {})},
                         "clip": vars(self.clip), "modality": modality, "features": feature}

    def __call__(self, items: list[Item], mode: str, part: str, split: str, num_crops: int | None = None,
                 ) -> dict[str, torch.Tensor]:
        crops = self.data.num_crops if num_crops is None else num_crops
        ds = self.data.dataset(items, mode, self.clip, modality=self.modality, num_crops=crops)
        key = {**self.base_key, "split": split, "part": part, "mode": mode, "views": [self.data.num_windows, crops],
               "items": len(items)}
        return feats.cached(self.cache_dir, key, lambda: feats.extract(
            self.model, ds, self.feature, self.cfg.batch_size, self.workers, self.device))


def _mean_over_splits(metrics: dict[str, float], names: list[str], keys: tuple[str, ...]) -> dict[str, float]:
    """``test/<key>``: the mean over the splits; the per-split entries stay when there are several."""
    mean = {f"test/{k}": sum(metrics[f"{n}/{k}"] for n in names) / len(names) for k in keys}
    return {k: v for k, v in metrics.items() if len(names) > 1} | mean


def run_linear_probe(cfg: DictConfig, model: VATT, data: DownstreamData) -> tuple[dict[str, float], dict]:
    listing = data.listing()
    if listing.multilabel or not listing.classes:
        raise ValueError(f"task=linear_probe needs a single-label classification set; {listing.name} is not one "
                         "(fine-tune multi-label sets: make train experiment=finetune_audioset)")
    probe = cfg.probe
    features = Features(cfg, model, data, probe.features, data.modality, probe.cache_dir)
    metrics: dict[str, float] = {}
    skipped = 0
    parts: list[protocol.Part] = []
    splits = evaluated_splits(data, listing)
    for split in splits:
        train = features(split.train, "single", "train", split.name)
        test = features(split.test, "views", "test", split.name)
        skipped += int(train["skipped"].sum()) + int(test["skipped"].sum())
        tv, sv = train["valid"], test["valid"]
        args = (train["features"][tv, 0], train["labels"][tv], test["features"][sv], test["labels"][sv],
                len(listing.classes))
        if probe.classifier == "authors":
            result = authors_probe(*args, epochs=probe.epochs, seed=cfg.seed)
        else:
            result = linear_probe(*args, grid=tuple(probe.l2_grid), seed=cfg.seed)
        result.update(chance_top1=chance_top1(test["labels"][sv]), num_train=int(tv.sum()), num_test=int(sv.sum()))
        for k, v in result.items():
            metrics[f"{split.name}/{k}"] = v
        log.info("%s: top-1 %.4f, top-5 %.4f (%d train / %d test videos)", split.name, result["top1"],
                 result["top5"], int(tv.sum()), int(sv.sum()))
        parts += [protocol.Part(split.name, "train", len(split.train), split.missing_train, _valid_ids(split.train, tv)),
                  protocol.Part(split.name, "test", len(split.test), split.missing_test, _valid_ids(split.test, sv))]
    first = splits[0].name
    out = _mean_over_splits(metrics, [s.name for s in splits], ("top1", "top5", "chance_top1"))
    out["num_train"], out["num_test"] = metrics[f"{first}/num_train"], metrics[f"{first}/num_test"]
    out["num_skipped"] = skipped
    if len(splits) == 1 and probe.classifier != "authors":
        out["test/l2"] = metrics[f"{first}/l2"]
    crops = 1 if data.modality == "audio" else data.num_crops
    record = dict(parts=parts, views=protocol.view_record(data.num_windows, crops, "class probabilities averaged"),
                  feature=probe.features, classifier=probe.classifier)
    return out, record


def zero_shot_classes(cfg: DictConfig, data: DownstreamData) -> tuple[list[str], list[list[str]]]:
    """The readable class names and the prompts of every class (``[class][template]``)."""
    listing = data.listing()
    if not listing.classes:
        raise UserError(f"task=zero_shot classifies into classes; {listing.name} has none (its captions are for "
                        "task=retrieval)")
    names = zs.class_names(listing.classes, listing.name, cfg.eval.class_names)
    templates = list(cfg.eval.templates) if cfg.eval.templates else zs.default_templates(
        listing.name, data.modality, data.label)
    texts = zs.prompts(names, templates)
    log.info("zero-shot: %d classes x %d templates, e.g. %s", len(names), len(templates), texts[0][:3])
    return names, texts


def run_zero_shot(cfg: DictConfig, model: VATT, data: DownstreamData, tokenizer: WordTokenizer, names: list[str],
                  texts: list[list[str]]) -> tuple[dict[str, float], dict]:
    listing = data.listing()
    unknown = zs.unknown_names(names, tokenizer)
    if unknown:
        log.warning("zero-shot: %d of %d class names have no word in the model's vocabulary, so their prompts are the "
                    "template alone, e.g. %s; rename them with eval.class_names=<file>", len(unknown), len(names),
                    unknown[:5])
    device = _device(cfg)
    model = model.to(device)
    classes = zs.class_embeddings(model, tokenizer, texts, clip_config(model, cfg).max_words, device)
    features = Features(cfg, model, data, "vt", data.modality, cfg.eval.cache_dir)
    metrics: dict[str, float] = {}
    parts: list[protocol.Part] = []
    splits = evaluated_splits(data, listing)
    skipped = 0
    for split in splits:
        test = features(split.test, "views", "test", split.name, num_crops=1)
        valid = test["valid"]
        skipped += int(test["skipped"].sum())
        windows, labels = test["features"][valid], test["labels"][valid]
        for tag, mode in (("", "mean_embedding"), ("meansim_", "mean_similarity")):
            result = zs.zero_shot_metrics(zs.zero_shot_scores(classes, windows, mode), labels, listing.multilabel)
            metrics.update({f"{split.name}/{tag}{k}": v for k, v in result.items()
                            if not (tag and k.startswith(("chance", "num_")))})
        metrics[f"{split.name}/num_test"] = int(valid.sum())
        parts.append(protocol.Part(split.name, "test", len(split.test), split.missing_test, _valid_ids(split.test, valid)))
    first = splits[0].name
    keys = tuple(k.split("/", 1)[1] for k in metrics if k.startswith(f"{first}/") and not k.endswith("num_test"))
    out = _mean_over_splits(metrics, [s.name for s in splits], keys)
    out.update(num_train=0, num_test=metrics[f"{first}/num_test"], num_skipped=skipped)
    space = "va->vt" if data.modality == "audio" else "vt"
    record = dict(parts=parts, views=protocol.view_record(
        data.num_windows, 1, "mean of the window embeddings (meansim_*: mean of the window similarities)"),
        feature=space, classifier=f"class prompts ({len(texts[0])} templates, embeddings averaged)")
    return out, record


def run_retrieval(cfg: DictConfig, model: VATT, data: DownstreamData, tokenizer: WordTokenizer,
                  ) -> tuple[dict[str, float], dict]:
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
    record = dict(parts=[protocol.Part(split.name, "test", len(items), split.missing_test, _valid_ids(items, valid))],
                  views=protocol.view_record(data.num_windows, 1, "mean of the window embeddings (meansim_*: mean of "
                                             "the window similarities)"), feature="vt", classifier=None)
    return metrics, record


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


def run_classifier(cfg: DictConfig, data: DownstreamData) -> tuple[dict[str, float], dict]:
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
    split = data.test_split()
    ds = data.dataset(split.test, "views", clip_config(model, cfg), modality=model.modality)
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
    record = dict(parts=[protocol.Part(split.name, "test", len(split.test), split.missing_test,
                                       _valid_ids(split.test, torch.cat(valid)))],
                  views=protocol.view_record(ds.num_windows, ds.num_crops, "logits averaged"), feature="logits",
                  classifier="fine-tuned")
    return out, record


def model_tokenizer(model: VATT) -> WordTokenizer:
    """The words a pretrained model's word table was trained with (index = word id)."""
    if model.vocab is None:
        raise ValueError(f"{model.config} came without its caption vocabulary; export the checkpoint with "
                         "`make export` next to its tokenizer.json, or evaluate the .ckpt where it was trained")
    return WordTokenizer.from_vocab(model.vocab, getattr(model, "punctuation", "remove"))


def caption_tokenizer(listing: Any) -> WordTokenizer:
    """A vocabulary of the evaluation captions' own words (for a model with random weights)."""
    return WordTokenizer.build([i.caption for s in listing.splits for i in s.test if i.caption])


def protocol_record(cfg: DictConfig, data: DownstreamData, model: VATT | None, task: str, parts: list,
                    views: dict, feature: str, classifier: str | None) -> dict:
    """The ``protocol`` object of this evaluation's ``metrics.json`` (``vatt.protocol``)."""
    listing = data.listing(retrieval=task == "retrieval")
    clip = {k: vars(clip_config(model, cfg))[k] for k in protocol.CLIP_KEYS} if model is not None else {}
    return protocol.build(task, listing.name, parts, [s.name for s in listing.splits], views, feature, classifier,
                          cfg.pretrained or None, clip=clip,
                          random_init=None if cfg.pretrained else f"{cfg.model_name}, seed {cfg.seed}")


def evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    data = downstream_data(cfg)
    if _device(cfg).type == "cpu":  # feature passes on the CPU beside their loader workers
        share_cores_with_workers(default_num_workers(cfg.num_workers))
    model = None
    if cfg.protocol == "linear_probe":
        model = build_model(cfg)
        metrics, record = run_linear_probe(cfg, model, data)
    elif cfg.protocol == "classifier":
        metrics, record = run_classifier(cfg, data)
    elif cfg.protocol == "retrieval":
        own_words = None if cfg.pretrained else caption_tokenizer(data.listing(retrieval=True))
        model = build_model(cfg, own_words.vocab_size if own_words else None)
        metrics, record = run_retrieval(cfg, model, data, own_words or model_tokenizer(model))
    elif cfg.protocol == "zero_shot":
        names, texts = zero_shot_classes(cfg, data)
        # random weights: a vocabulary of the prompts' own words (as retrieval builds one of its captions)
        own_words = None if cfg.pretrained else WordTokenizer.build([t for c in texts for t in c])
        model = build_model(cfg, own_words.vocab_size if own_words else None)
        metrics, record = run_zero_shot(cfg, model, data, own_words or model_tokenizer(model), names, texts)
    else:
        raise UserError(f"protocol={cfg.protocol!r}: choose task=linear_probe, task=zero_shot, task=retrieval or "
                        "task=classifier")
    listing = data.listing(retrieval=cfg.protocol == "retrieval")
    shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith("test/")}
    log.info("%s on %s (%s): %s", cfg.protocol, listing.name, cfg.pretrained or f"random {cfg.model_name}", shown)
    record = protocol_record(cfg, data, model, cfg.protocol, **record)
    log.info("%d of %s official test items evaluated (%d missing, %d unreadable); comparable to the paper: %s",
             record["items_evaluated"], record["items_official"] or "?", record["items_missing"],
             record["items_unreadable"], "yes" if record["comparable_to_paper"] else "no: " + "; ".join(record["reasons"]))
    metrics = {**metrics, "protocol": record}
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

"""Zero-shot classification: class names as text, compared with clips in the video-text space.

No training on the target set (the CLIP recipe, applied to VATT's text tower; the
paper evaluates zero-shot *retrieval* only, so this is an extension, see
``docs/deviations.md``):

1. every class name is made readable (:func:`readable_name`: ``ApplyEyeMakeup`` ->
   "apply eye makeup", ``brush_hair`` -> "brush hair", ``adult+female+singing`` ->
   "adult female singing"), with a few corrections per dataset
   (:data:`NAME_FIXES`) and optionally a names file of the user's (:func:`class_names`);
2. each name fills every prompt template (:data:`TEMPLATES`, a default set per kind
   of dataset, ``eval.templates=[...]`` to change it); the prompts' L2-normalised
   ``vt`` embeddings are averaged per class and re-normalised (:func:`class_embeddings`);
3. each clip is seen through the same windows as retrieval (``data.num_windows``,
   one centred crop) and compared with every class by cosine similarity, the windows
   combined both ways retrieval reports (:func:`zero_shot_scores`): mean of the
   window embeddings (``top1``) and mean of the window similarities (``meansim_top1``);
4. single-label sets: top-1/top-5 and the most frequent class's share
   (``chance_top1``); multi-label sets (AudioSet): mAP, AUC, d' and ``chance_mAP``
   (the mean share of positives, what constant scores give).

Audio clips reach the video-text space through the FAC head's video-audio ->
video-text projection (``VATT.encode_audio(space="vt")``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from vatt.data.tokenizer import WordTokenizer
from vatt.metrics import multilabel_metrics, topk_accuracy, window_similarity
from vatt.models import VATT
from vatt.tasks.linear_probe import chance_top1

log = logging.getLogger(__name__)

# Prompt templates per kind of dataset; "{}" is the readable class name. The tokenizer deletes punctuation, so
# the templates carry none.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "action": ("a video of {}", "a video of a person {}", "a person {}", "a person doing {}", "someone {}",
               "a clip of {}", "{}"),
    "sound": ("the sound of {}", "the sound of a {}", "a recording of {}", "{} can be heard", "{}"),
    # the demo's captions name colour, shape and motion together ("a red square moves left")
    "demo_colour": ("a {} circle", "a {} square", "a {} triangle", "a {} cross", "a {} shape"),
    "demo_shape": ("a {}", "the {} moves", "we see a {}", "a {} is moving"),
    "demo_motion": ("a shape moves {}", "it moves {}", "the circle moves {}", "the square moves {}"),
}
DATASET_KINDS = {"ucf101": "action", "hmdb51": "action", "kinetics400": "action", "kinetics600": "action",
                 "kinetics700": "action", "mit": "action", "esc50": "sound", "audioset": "sound"}
# official names the rules below do not make readable: dataset -> {official name: readable name}
NAME_FIXES: dict[str, dict[str, str]] = {
    "ucf101": {"Skijet": "jet skiing", "PlayingDaf": "playing daf drum", "HandstandPushups": "handstand push ups",
               "WallPushups": "wall push ups"},
    "hmdb51": {"fall_floor": "falling to the floor", "shoot_bow": "shoot bow and arrow", "pullup": "pull up",
               "pushup": "push up", "situp": "sit up"},
}

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def readable_name(name: str) -> str:
    """An official class name as lower-case words.

    ``_`` and ``+`` become spaces (HMDB51, ESC-50, Moments in Time); a name without
    spaces in mixed case is split at its capitals (UCF101: ``ApplyEyeMakeup``,
    acronyms kept together: ``TVShow`` -> "tv show"); Kinetics and AudioSet names are
    already words ("passing American football (in game)", "Male speech, man speaking")
    and are only lower-cased.
    """
    text = re.sub(r"\s+", " ", name.replace("_", " ").replace("+", " ")).strip()
    if " " not in text and text != text.lower() and text != text.upper():
        text = _CAMEL.sub(" ", text)
    return text.lower()


def read_names_file(path: str | Path, official: Sequence[str]) -> dict[str, str]:
    """``official name -> readable name`` from a names file.

    Either one readable name per line in class order (exactly one line per class), or
    ``<official name><TAB><readable name>`` lines for the classes to rename (the others
    keep :func:`readable_name`). Blank lines and lines starting with ``#`` are ignored.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"eval.class_names={path}: no such file (one readable name per line in class order, "
                                "or '<official name><TAB><readable name>' lines)")
    lines = [(n, line.rstrip("\r\n")) for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line.strip() and not line.lstrip().startswith("#")]
    if any("\t" in line for _, line in lines):
        known, out = set(official), {}
        for n, line in lines:
            if "\t" not in line:
                raise ValueError(f"eval.class_names={path} line {n}: expected '<official name><TAB><readable name>' "
                                 f"like the other lines, got {line!r}")
            name, readable = (s.strip() for s in line.split("\t", 1))
            if name not in known:
                raise ValueError(f"eval.class_names={path} line {n}: {name!r} is not a class of this dataset "
                                 f"(e.g. {', '.join(list(official)[:3])})")
            out[name] = readable
        return out
    if len(lines) != len(official):
        raise ValueError(f"eval.class_names={path} has {len(lines)} names for {len(official)} classes: give one per "
                         "class in class order, or '<official name><TAB><readable name>' lines for some")
    return {name: line.strip() for name, (_, line) in zip(official, lines)}


def class_names(official: Sequence[str], dataset: str, names_file: str | Path | None = None) -> list[str]:
    """Readable names of ``official`` (class order): the names file, else the dataset's fixes, else the rules."""
    fixes = NAME_FIXES.get(dataset, {})
    given = read_names_file(names_file, official) if names_file else {}
    return [given.get(c) or fixes.get(c) or readable_name(c) for c in official]


def default_templates(dataset: str, modality: str, label: str | None = None) -> tuple[str, ...]:
    """The templates of ``dataset``'s kind: actions, sounds, or the demo's label; else by the input modality."""
    if dataset == "demo":
        kind = f"demo_{label or 'colour'}"
    else:
        kind = DATASET_KINDS.get(dataset, "sound" if modality == "audio" else "action")
    if kind not in TEMPLATES:
        raise ValueError(f"no default prompt templates for {dataset} ({kind}); give eval.templates=['a video of {{}}']")
    return TEMPLATES[kind]


def prompts(names: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """``[class][template]`` texts; every template must hold one ``{}``."""
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        raise ValueError(f"eval.templates: each template needs exactly one '{{}}' for the class name, got "
                         f"{bad[:3] if bad else 'none'}; e.g. eval.templates=['a video of {{}}','{{}}']")
    return [[t.format(n) for t in templates] for n in names]


def unknown_names(names: Sequence[str], tokenizer: WordTokenizer) -> list[str]:
    """The readable names none of whose words is in the model's vocabulary (their prompts carry no class word)."""
    ids = tokenizer(list(names), 16)
    return [n for n, row in zip(names, ids) if not ((row != 0) & (row != tokenizer.unk_id)).any()]


@torch.no_grad()
def class_embeddings(model: VATT, tokenizer: WordTokenizer, texts: Sequence[Sequence[str]], max_words: int = 16,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """``[C, 256]``: per class, the mean of its prompts' L2-normalised ``vt`` embeddings, re-normalised."""
    out = []
    for class_prompts in texts:
        ids = tokenizer(list(class_prompts), max_words).to(device)
        out.append(F.normalize(model.encode_text(ids, space="vt", normalize=True).float().mean(0), dim=-1))
    return torch.stack(out).cpu()


def zero_shot_scores(classes: torch.Tensor, windows: torch.Tensor, mode: str = "mean_embedding") -> torch.Tensor:
    """Cosine scores ``[N, C]`` of ``N`` clips seen as ``W`` windows (``[N, W, D]``) against ``classes`` ``[C, D]``.

    ``mode``: ``mean_embedding`` (mean of the normalised window embeddings) or
    ``mean_similarity`` (mean of the window similarities), as for retrieval.
    """
    return window_similarity(classes, windows, mode).T


def zero_shot_metrics(scores: torch.Tensor, labels: torch.Tensor, multilabel: bool) -> dict[str, float]:
    """Top-1/top-5 and ``chance_top1`` (single-label) or mAP, AUC, d' and ``chance_mAP`` (multi-label) of ``scores``."""
    if multilabel:
        metrics = multilabel_metrics(scores, labels.float())
        positives = labels.float().sum(0)
        scored = (positives > 0) & (positives < len(labels))
        metrics["chance_mAP"] = float((positives[scored] / len(labels)).mean()) if scored.any() else float("nan")
        return metrics
    return {**topk_accuracy(scores, labels.long(), ks=(1, 5)), "chance_top1": chance_top1(labels)}

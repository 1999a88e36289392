"""The authors' TensorFlow VATT checkpoints in PyTorch: ``make convert ckpt=<TF checkpoint> out=<file or folder>``.

``convert`` reads a TF2 checkpoint without TensorFlow (``bundle``), reads the
architecture off its tensors and maps every tensor to this project's model
(``tf_vatt``), then writes a pretrained model (``vatt.load_pretrained`` and every
downstream command take it) or a fine-tuned classifier (``vatt.load_classifier``,
``make eval task=classifier``).
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

from .bundle import BundleError, TensorBundle, open_bundle, write_bundle
from .tf_vatt import ConversionError, Plan, fill, listing, plan_conversion, read_classes

__all__ = ["BundleError", "ConversionError", "Plan", "TensorBundle", "convert", "open_bundle", "plan_conversion",
           "write_bundle"]


def _vocabulary(path: str | Path | None, size: int) -> list[str] | None:
    if path is None:
        return None
    from vatt.data.tokenizer import WordTokenizer

    words = WordTokenizer.from_file(path).words
    if len(words) != size:
        raise ConversionError(f"--vocab {path}: {len(words)} words, but the checkpoint's word table has {size} rows; "
                              "give the vocabulary the model was trained with (misc/howto100m_en.txt)")
    return words


def convert(ckpt: str | Path, out: str | Path, vocab: str | Path | None = None, classes: str | Path | None = None,
            source: str | None = None) -> dict[str, Any]:
    """Convert the checkpoint at ``ckpt`` (a prefix, its ``.index`` or its folder) into ``out``.

    ``out``: a ``.safetensors`` file, or a folder (``config.json``, ``model.safetensors``,
    ``vocab.txt``, ``README.md``: ``vatt.save_pretrained``'s layout). ``vocab``: the
    word list the text tower was trained with (``misc/howto100m_en.txt``); ``classes``:
    a classifier's class names, one per line. Returns what was converted, with the
    time and peak memory it took.
    """
    import torch

    from vatt.checkpoint import file_sha256
    from vatt.models.vatt import build_tower_classifier, build_vatt
    from vatt.pretrained import save_classifier, save_pretrained

    t0 = time.perf_counter()
    with open_bundle(ckpt) as bundle:
        plan = plan_conversion(bundle)
        with torch.device("cpu"):
            if plan.kind == "classifier":
                model = build_tower_classifier(plan.config, plan.modality, plan.num_classes)
            else:
                model = build_vatt(plan.config)
        model.load_state_dict(fill(model, plan, bundle))
        data = bundle.prefix.with_name(bundle.prefix.name + ".data-00000-of-00001")
        info = {"source": source or str(bundle.prefix), "source_sha256": file_sha256(data) if data.is_file() else "",
                "converted_by": "vatt.convert"}
        model.config = plan.config
        if plan.kind == "classifier":
            path = save_classifier(model, out, classes=read_classes(classes), **info)
        else:
            path = save_pretrained(model, out, vocab=_vocabulary(vocab, plan.config.vocab_size), **info)
    return {"kind": plan.kind, "modality": plan.modality, "num_classes": plan.num_classes, "out": str(path),
            "tensors": len(plan.sources), "ignored": len(plan.ignored), "seconds": round(time.perf_counter() - t0, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def describe(ckpt: str | Path) -> str:
    """``--list``: every tensor of the checkpoint and where it goes."""
    with open_bundle(ckpt) as bundle:
        return listing(plan_conversion(bundle), bundle)

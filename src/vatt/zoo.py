"""The authors' released checkpoints (google-research ``vatt/`` README, "Checkpoints"): where they are, what they become.

``vatt.list_pretrained()`` returns one record per checkpoint: its name, what it is,
the download addresses of its two files, the conversion command and what that writes,
and the numbers the authors report for it (their README's tables; the paper's Tables
1-4 for the pretrained models). The addresses are the authors' Google Cloud Storage
bucket ``tf_model_garden/vision/vatt``; ``storage.googleapis.com`` serves it without a
login (``storage.cloud.google.com``, the README's links, asks for one).
"""

from __future__ import annotations

from typing import Any

BUCKET = "https://storage.googleapis.com/tf_model_garden/vision/vatt"
MISC = f"{BUCKET}/misc_data.tgz"  # misc/word2vec.pkl, misc/howto100m_en.txt

_PRETRAINED = {
    "tx_fac_bbs": ("modality-specific VATT, Base video / Base audio / Small text", "bbs",
                   {"Kinetics-400 top-1 of the ViT-Base fine-tuned from it": 79.6}),
    "tx_fac_mbs": ("modality-specific VATT, Medium video / Base audio / Small text", "mbs",
                   {"UCF101 linear probe top-1 (paper Table 5)": 87.6, "HMDB51 linear probe top-1": 66.4,
                    "ESC-50 linear probe top-1": 84.9, "YouCook2 zero-shot R@10 (paper Table 4)": 45.5,
                    "MSR-VTT zero-shot R@10": 29.7}),
    "tx_fac_lbs": ("modality-specific VATT, Large video / Base audio / Small text", "lbs",
                   {"Kinetics-400 top-1 of the ViT-Large fine-tuned from it": 82.1}),
    "ut_fac_medium": ("modality-agnostic VATT: one Medium Transformer for video, audio and text", "ma_medium",
                      {"Kinetics-400 top-1 of the ViT-Medium fine-tuned from it": 79.9}),
}
# (model, dataset, pretraining) -> (step, top-1 / mAP, top-5 / AUC, d-prime)
_FINETUNED = {
    ("vit_base", "k400", "modality_specific"): (100000, 79.6, 94.9),
    ("vit_medium", "k400", "modality_specific"): (100000, 81.1, 95.6),
    ("vit_large", "k400", "modality_specific"): (100000, 82.1, 95.5),
    ("vit_medium", "k400", "modality_agnostic"): (100000, 79.9, 94.9),
    ("vit_base", "k600", "modality_specific"): (100000, 80.5, 95.5),
    ("vit_medium", "k600", "modality_specific"): (90000, 82.4, 96.1),
    ("vit_large", "k600", "modality_specific"): (100000, 83.6, 96.6),
    ("vit_medium", "k600", "modality_agnostic"): (100000, 80.8, 95.5),
    ("vit_large", "k700", "modality_specific"): (100000, 72.7, 90.5),
    ("vit_base", "mit", "modality_specific"): (150000, 38.7, 67.5),
    ("vit_medium", "mit", "modality_specific"): (150000, 39.5, 68.2),
    ("vit_large", "mit", "modality_specific"): (150000, 41.1, 67.7),
    ("vit_medium", "mit", "modality_agnostic"): (150000, 37.8, 65.9),
    ("wat_base", "audioset", "modality_specific"): (50000, 39.4, 97.1, 2.895),
    ("wat_medium", "audioset", "modality_agnostic"): (50000, 39.3, 97.0, 2.884),
}
_DATASETS = {"k400": ("kinetics400", 400), "k600": ("kinetics600", 600), "k700": ("kinetics700", 700),
             "mit": ("mit", 339), "audioset": ("audioset", 527)}


def _files(path: str) -> dict[str, str]:
    return {"index": f"{BUCKET}/{path}.index", "data": f"{BUCKET}/{path}.data-00000-of-00001"}


def list_pretrained() -> list[dict[str, Any]]:
    """The authors' checkpoints: name, kind, description, download URLs, conversion, reported numbers."""
    out: list[dict[str, Any]] = []
    for name, (what, preset, numbers) in _PRETRAINED.items():
        path = f"pretrain/{name}/ckpt-500000"
        out.append({"name": name, "kind": "pretrained", "description": what, "files": _files(path),
                    "converts_to": f"a pretrained VATT ({preset}); vatt.load_pretrained and every downstream command "
                                   "read it",
                    "convert": f"make convert ckpt={name}/ckpt-500000 out=vatt_{name} vocab=misc/howto100m_en.txt",
                    "reported": {k: v for k, v in numbers.items() if v is not None}})
    for (model, ds, pretrain), (step, *numbers) in _FINETUNED.items():
        dataset, classes = _DATASETS[ds]
        name = f"{model}_{ds}_{pretrain}"
        path = f"finetune/{model}/{ds}_{pretrain}_pretrain/ckpt-{step}"
        keys = ("mAP", "AUC", "d-prime") if ds == "audioset" else ("top-1", "top-5")
        out.append({"name": name, "kind": "classifier", "dataset": dataset, "num_classes": classes,
                    "description": f"{model} fine-tuned on {dataset} from the {pretrain.replace('_', '-')} pretraining",
                    "files": _files(path),
                    "converts_to": f"a {'audio' if model.startswith('wat') else 'video'} classifier with {classes} "
                                   "classes; make eval task=classifier reads it",
                    "convert": f"make convert ckpt={name}/ckpt-{step} out=vatt_{name}",
                    "reported": dict(zip(keys, numbers))})
    return out

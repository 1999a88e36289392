"""Frozen-backbone features of labelled clips, cached on disk.

``extract`` runs the model (eval mode, no gradients, DropToken off) over a
``LabeledClipDataset`` and returns per-view features: the pooled ``[AGG]`` feature
of the modality's Transformer (``features="agg"``, before the FAC heads: what the
paper's linear probes use) or a common-space embedding (``"va"``, ``"vt"``; audio's
``"vt"`` goes through the FAC head's va -> vt projection).
``cached`` stores them under a key of everything they depend on (weights,
dataset, split, geometry, views, feature kind), so a second run of a probe only
trains the classifier.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch

from vatt.data.labeled import LabeledClipDataset
from vatt.data.loading import DataLoader
from vatt.models import VATT
from vatt.progress import track

log = logging.getLogger(__name__)

FEATURES = ("agg", "va", "vt")


def encode(model: VATT, batch: dict[str, torch.Tensor], features: str) -> torch.Tensor:
    """Features of a batch's clips ``[B, (V,) D]``; views (if any) are flattened through the model and restored."""
    if features not in FEATURES:
        raise ValueError(f"probe.features={features!r}: choose one of {FEATURES}")
    space = None if features == "agg" else features
    key = "audio" if "audio" in batch else "video"
    x = batch[key]
    has_views = x.ndim == (3 if key == "audio" else 6)  # [B, V, S] / [B, V, 3, T, H, W]
    lead = x.shape[:2] if has_views else x.shape[:1]
    flat = x.reshape(-1, *x.shape[len(lead):])
    if key == "audio":
        out = model.encode_audio(flat, space=space)  # vt: through the va -> vt projection
    else:
        out = model.encode_video(flat, space=space)
    return out.reshape(*lead, out.shape[-1])


@torch.no_grad()
def extract(
    model: VATT, dataset: LabeledClipDataset, features: str = "agg", batch_size: int = 16, num_workers: int = 0,
    device: torch.device | str = "cpu", text: bool = False,
) -> dict[str, torch.Tensor]:
    """``features`` ``[N, V, D]`` (V = 1 outside ``views`` mode), ``labels``, ``valid`` ``[N]``, and with
    ``text=True`` the captions' video-text embeddings ``text`` ``[N, 256]`` (L2-normalised)."""
    model = model.eval().to(device)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    out: dict[str, list[torch.Tensor]] = {"features": [], "labels": [], "valid": [], "skipped": []}
    if text:
        out["text"] = []
    for batch in track(loader, len(loader), f"features of {len(dataset)} clips", log):
        batch = {k: v.to(device) for k, v in batch.items()}
        f = encode(model, batch, features).float()
        out["features"].append((f if f.ndim == 3 else f[:, None]).cpu())
        out["labels"].append(batch["label"].cpu())
        out["valid"].append(batch["valid"].cpu())
        out["skipped"].append(batch["skipped"].cpu())
        if text:
            out["text"].append(model.encode_text(batch["text"], space="vt", normalize=True).float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def weights_id(pretrained: str | Path | None, model_name: str, seed: int) -> dict[str, Any]:
    """What identifies a model's weights cheaply: the file (path, size, modification time) or the random init."""
    if pretrained is None:
        return {"random_init": model_name, "seed": seed}
    p = Path(pretrained).resolve()
    st = p.stat()
    return {"file": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cached(cache_dir: str | Path | None, key: dict[str, Any], compute: Callable[[], dict[str, torch.Tensor]]) -> dict:
    """``compute()``, or its stored result for the same ``key`` (a JSON-able dict); no cache when ``cache_dir`` is None."""
    if cache_dir is None:
        return compute()
    text = json.dumps(key, sort_keys=True, default=str)
    path = Path(cache_dir) / f"{hashlib.sha1(text.encode()).hexdigest()[:20]}.pt"
    if path.is_file():
        log.info("features from the cache: %s", path)
        return torch.load(path, map_location="cpu", weights_only=True)
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(result, tmp)
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(key, indent=1, sort_keys=True, default=str))
    return result

"""The towers of a VATT model exported for serving: ONNX files or ``torch.export`` programs.

``make export ckpt=PATH out=DIR format=onnx`` (``python -m vatt.export --ckpt PATH --out DIR --format onnx``) writes

- ``video.onnx``: ``video`` ``[batch, 3, T, H, W]`` float32 in [-1, 1] -> ``feature`` (the pooled
  ``[AGG]`` feature), ``va`` ``[batch, 512]``, ``vt`` ``[batch, 256]``;
- ``audio.onnx``: ``audio`` ``[batch, S]`` mono waveform -> ``feature``, ``va``, ``vt`` (the va
  embedding through the FAC head's va -> vt projection, as ``encode_audio(space="vt")``);
- ``text.onnx``: ``text`` ``[batch, L]`` int64 word ids (0 = padding) -> ``feature``, ``vt``;
- ``towers.json``: every file's input and outputs with their shapes, the geometry the model was
  built for (frames, frame rate, image size, sample rate, words per caption), how captions become
  ids (``vocab.txt``, one word per line, line = id, and the punctuation rule), the source weights
  and their SHA-256;
- ``vocab.txt`` when the model carries its vocabulary.

``format=torch`` writes ``video.pt2``, ``audio.pt2``, ``text.pt2`` instead (``torch.export.save``;
``torch.export.load(path).module()`` runs them). The batch is dynamic; the other dimensions are the
model's geometry. The embeddings are not L2-normalised (``encode_*(normalize=False)``); retrieval
and zero-shot normalise them. DropToken is off: the towers are exported from the model in eval
mode, built with ``droptoken=0``. :func:`check_towers` runs the files (ONNX Runtime or the
programs) against the eager model on random inputs of another batch size.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vatt.models import VATT
from vatt.models.layers import Attention

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torch")
OUTPUTS = {"video": ("feature", "va", "vt"), "audio": ("feature", "va", "vt"), "text": ("feature", "vt")}
SUFFIX = {"onnx": ".onnx", "torch": ".pt2"}
OPSET = 18


class VideoTower(nn.Module):
    def __init__(self, model: VATT) -> None:
        super().__init__()
        self.model = model

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feature = self.model.video(video)
        va, vt = self.model.heads.video(feature)
        return feature, va, vt


class AudioTower(nn.Module):
    def __init__(self, model: VATT) -> None:
        super().__init__()
        self.model = model

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feature = self.model.audio(audio)
        va = self.model.heads.audio(feature)
        return feature, va, self.model.heads.va_to_vt(va)


class TextTower(nn.Module):
    def __init__(self, model: VATT) -> None:
        super().__init__()
        self.model = model

    def forward(self, text: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feature = self.model.text(text, text != 0)
        return feature, self.model.heads.text(feature)


TOWERS = {"video": VideoTower, "audio": AudioTower, "text": TextTower}


def eager_outputs(model: VATT, name: str, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What the exported ``name`` tower must reproduce, through the model's own ``encode_*`` methods."""
    with torch.no_grad():
        if name == "video":
            return model.encode_video(x), model.encode_video(x, space="va"), model.encode_video(x, space="vt")
        if name == "audio":
            return model.encode_audio(x), model.encode_audio(x, space="va"), model.encode_audio(x, space="vt")
        return model.encode_text(x), model.encode_text(x, space="vt")


def example_inputs(model: VATT, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of the model's geometry: clips in [-1, 1], waveforms, word ids with padding at the end."""
    cfg, g = model.config, torch.Generator().manual_seed(seed)
    video = torch.rand(batch, 3, cfg.num_frames, cfg.image_size, cfg.image_size, generator=g) * 2 - 1
    audio = torch.randn(batch, cfg.audio_samples, generator=g) * 0.1
    text = torch.randint(2, cfg.vocab_size, (batch, cfg.max_words), generator=g)
    lengths = torch.randint(1, cfg.max_words + 1, (batch,), generator=g)
    text[torch.arange(cfg.max_words)[None] >= lengths[:, None]] = 0
    return {"video": video, "audio": audio, "text": text}


@contextlib.contextmanager
def explicit_attention() -> Iterator[None]:
    """Attention spelled out as matrix products while exporting (see ``Attention.explicit``)."""
    before = Attention.explicit
    Attention.explicit = True
    try:
        yield
    finally:
        Attention.explicit = before


def _program(model: VATT, name: str, x: torch.Tensor) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with explicit_attention(), torch.no_grad():
        return torch.export.export(TOWERS[name](model).eval(), (x,), dynamic_shapes=({0: batch},), strict=False)


def export_towers(model: VATT, out: str | Path, fmt: str = "onnx", source: str | None = None,
                  sha256: str | None = None) -> dict[str, Path]:
    """Write the three towers of ``model`` (eval mode, DropToken off) into the folder ``out``; returns the files."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}: choose one of {', '.join(FORMATS)}")
    if model.training:
        raise ValueError("export the model in eval mode (model.eval()): BatchNorm and dropout must be at inference")
    if fmt == "onnx":
        try:
            import onnxscript  # noqa: F401 - torch's ONNX exporter needs it
        except ImportError as e:
            raise ImportError("format=onnx needs onnx and onnxscript: .venv/bin/pip install -e '.[onnx]' "
                              "(format=torch needs nothing more)") from e
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    inputs = example_inputs(model)
    written: dict[str, Path] = {}
    towers: dict[str, Any] = {}
    for name, x in inputs.items():
        program = _program(model, name, x)
        path = out / f"{name}{SUFFIX[fmt]}"
        if fmt == "torch":
            torch.export.save(program, path)
        else:
            import warnings

            quiet = logging.getLogger("onnxscript")  # its optimizer's notes on ops it leaves unfolded
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the exporter's notes on its own internals
                    onnx = torch.onnx.export(program, (x,), dynamo=True, input_names=[name],
                                             output_names=list(OUTPUTS[name]), opset_version=OPSET, verbose=False)
            finally:
                quiet.setLevel(level)
            onnx.save(str(path))
        with torch.no_grad():
            shapes = [list(t.shape[1:]) for t in eager_outputs(model, name, x)]
        towers[name] = {
            "file": path.name,
            "input": {"name": name, "shape": ["batch", *x.shape[1:]], "dtype": str(x.dtype).removeprefix("torch.")},
            "outputs": {o: ["batch", *s] for o, s in zip(OUTPUTS[name], shapes)},
        }
        written[name] = path
        log.info("exported %s -> %s", name, path)
    geometry = dict(getattr(model, "input", None) or {})
    geometry.update(num_frames=cfg.num_frames, image_size=cfg.image_size, audio_samples=cfg.audio_samples,
                    max_words=cfg.max_words)
    vocab = getattr(model, "vocab", None)
    if vocab:
        (out / "vocab.txt").write_text("".join(f"{w}\n" for w in vocab), encoding="utf-8")
        written["vocab"] = out / "vocab.txt"
    meta = {
        "format": fmt,
        "opset": OPSET if fmt == "onnx" else None,
        "towers": towers,
        "geometry": geometry,
        "video_range": [-1.0, 1.0],
        "text": {"vocab": "vocab.txt" if vocab else None, "padding_id": 0,
                 "punctuation": getattr(model, "punctuation", "remove"),
                 "rule": "ASCII punctuation deleted, lower-cased, split at whitespace; unknown words -> [UNK]"},
        "normalized": False,
        "source": source,
        "sha256": sha256,
    }
    (out / "towers.json").write_text(json.dumps(meta, indent=1) + "\n")
    written["json"] = out / "towers.json"
    return written


def run_tower(path: str | Path, x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of one exported tower file on ``x``: ONNX Runtime for ``.onnx``, the program for ``.pt2``."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return [torch.from_numpy(o) for o in session.run(None, {name: x.numpy()})]
    program = torch.export.load(str(path)).module()
    with torch.no_grad():
        return list(program(x))


def check_towers(model: VATT, out: str | Path, batch: int = 3, seed: int = 1) -> dict[str, float]:
    """Largest absolute difference between each exported tower and the eager model, on random inputs of ``batch``."""
    meta = json.loads((Path(out) / "towers.json").read_text())
    worst: dict[str, float] = {}
    for name, x in example_inputs(model, batch, seed).items():
        got = run_tower(Path(out) / meta["towers"][name]["file"], x)
        want = eager_outputs(model, name, x)
        worst[name] = max(float((g.float() - w.float()).abs().max()) for g, w in zip(got, want))
    return worst
